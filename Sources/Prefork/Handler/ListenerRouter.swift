/// A handler that hands each connection to the handler chosen for its listener, by the
/// listener's name (systemd's `FileDescriptorName=`, or the configured address), falling back
/// to a default. Lets one pool serve, say, a public and an admin socket differently.
public struct ListenerRouter: ConnectionHandler {
    private var fallback: any ConnectionHandler
    private var routes: [String: any ConnectionHandler]

    /// Routes connections on the listeners named in `routes`; every other one goes to `fallback`.
    public init(fallback: any ConnectionHandler, routes: [String: any ConnectionHandler]) {
        self.fallback = fallback
        self.routes = routes
    }

    /// Prepares every handler it routes to.
    public mutating func prepare(_ context: WorkerContext) throws {
        try fallback.prepare(context)
        for name in routes.keys { try routes[name]!.prepare(context) }
    }

    /// Whether the handler serving `listener` answers silent clients.
    public func answersSilentClients(on listener: Listener) -> Bool {
        (routes[listener.name] ?? fallback).answersSilentClients(on: listener)
    }

    /// Whether any of its handlers answers silent clients; the worker asks per listener with
    /// ``answersSilentClients(on:)``.
    public var answersSilentClients: Bool {
        fallback.answersSilentClients || routes.values.contains { $0.answersSilentClients }
    }

    /// Lets every handler it routes to wind down.
    public mutating func finish(_ context: WorkerContext) {
        fallback.finish(context)
        for name in routes.keys { routes[name]!.finish(context) }
    }

    /// The route names of all its handlers, each once (handlers on different listeners that
    /// name the same route count into one tally).
    public var routeNames: [String] {
        var seen = Set<String>()
        return ([fallback] + routes.keys.sorted().map { routes[$0]! }).flatMap(\.routeNames).filter {
            seen.insert($0).inserted
        }
    }

    /// Hands the connection to the handler of its listener, or to the fallback.
    public mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {
        if routes[connection.listener.name] != nil {
            try routes[connection.listener.name]!.handle(connection, initialData: initialData, context: context)
        } else {
            try fallback.handle(connection, initialData: initialData, context: context)
        }
    }
}
