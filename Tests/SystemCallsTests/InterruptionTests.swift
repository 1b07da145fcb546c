import SystemCalls
import SystemPackage
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The errno rule, driven by a fake system call that fails a given number of times first.
@Suite struct InterruptionTests {
    /// A fake call: fails `failures` times with `failure`, then returns `value`. Counts its calls.
    final class FakeCall {
        let failures: Int
        let failure: Errno
        let value: Int32
        private(set) var calls = 0

        init(failures: Int, with failure: Errno, then value: Int32 = 7) {
            self.failures = failures
            self.failure = failure
            self.value = value
        }

        /// The kernel's convention: -1 and errno.
        func kernelStyle() -> Int32 {
            calls += 1
            guard calls > failures else {
                errno = failure.rawValue
                return -1
            }
            return value
        }

        /// libsystemd's convention: the negated errno.
        func libsystemdStyle() -> Int32 {
            calls += 1
            return calls > failures ? value : -failure.rawValue
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let failures: Int
        let failure: Errno
        let retryOnInterrupt: Bool
        /// The expected outcome: the value, or the errno returned.
        let expected: Result<Int32, Errno>
        let expectedCalls: Int

        var testDescription: String {
            "\(failures) × \(failure.rawValue), retryOnInterrupt \(retryOnInterrupt) → \(expected), \(expectedCalls) calls"
        }
    }

    static let cases: [Case] = [
        Case(failures: 0, failure: .interrupted, retryOnInterrupt: true, expected: .success(7), expectedCalls: 1),
        Case(failures: 1, failure: .interrupted, retryOnInterrupt: true, expected: .success(7), expectedCalls: 2),
        Case(failures: 5, failure: .interrupted, retryOnInterrupt: true, expected: .success(7), expectedCalls: 6),
        Case(failures: 0, failure: .interrupted, retryOnInterrupt: false, expected: .success(7), expectedCalls: 1),
        Case(
            failures: 1, failure: .interrupted, retryOnInterrupt: false, expected: .failure(.interrupted),
            expectedCalls: 1),
        Case(
            failures: 3, failure: .interrupted, retryOnInterrupt: false, expected: .failure(.interrupted),
            expectedCalls: 1),
        Case(
            failures: 1, failure: .resourceTemporarilyUnavailable, retryOnInterrupt: true,
            expected: .failure(.resourceTemporarilyUnavailable), expectedCalls: 1),
        Case(
            failures: 4, failure: .connectionRefused, retryOnInterrupt: true, expected: .failure(.connectionRefused),
            expectedCalls: 1),
        Case(
            failures: 2, failure: .badFileDescriptor, retryOnInterrupt: false, expected: .failure(.badFileDescriptor),
            expectedCalls: 1),
    ]

    @Test(arguments: cases)
    func minusOneAndErrno(_ test: Case) {
        let call = FakeCall(failures: test.failures, with: test.failure)
        let result = valueOrErrno(retryOnInterrupt: test.retryOnInterrupt) { call.kernelStyle() }
        #expect(result == test.expected)
        #expect(call.calls == test.expectedCalls)
    }

    @Test(arguments: cases)
    func negatedErrno(_ test: Case) {
        let call = FakeCall(failures: test.failures, with: test.failure)
        let result = valueOrNegatedErrno(retryOnInterrupt: test.retryOnInterrupt) { call.libsystemdStyle() }
        #expect(result == test.expected)
        #expect(call.calls == test.expectedCalls)
    }

    @Test(arguments: cases)
    func nothingOrErrnoDropsTheValue(_ test: Case) {
        let call = FakeCall(failures: test.failures, with: test.failure, then: 0)
        let result = nothingOrErrno(retryOnInterrupt: test.retryOnInterrupt) { call.kernelStyle() }
        switch (result, test.expected) {
        case (.success, .success): break
        case (.failure(let got), .failure(let wanted)): #expect(got == wanted)
        default: Issue.record("got \(result), expected \(test.expected)")
        }
        #expect(call.calls == test.expectedCalls)
    }

    @Test func retryIsTheDefault() {
        let kernel = FakeCall(failures: 2, with: .interrupted)
        #expect(valueOrErrno { kernel.kernelStyle() } == .success(7))
        let libsystemd = FakeCall(failures: 2, with: .interrupted)
        #expect(valueOrNegatedErrno { libsystemd.libsystemdStyle() } == .success(7))
    }

    @Test func successValuesThatLookLikeErrorsInTheOtherConvention() {
        // -2 is a value for a -1/errno call, and 1 (or any positive count) succeeds in both.
        #expect(valueOrErrno { Int32(-2) } == .success(-2))
        #expect(valueOrNegatedErrno { 1 } == .success(1))
        #expect(valueOrNegatedErrno { -1 } == .failure(.notPermitted))
    }
}
