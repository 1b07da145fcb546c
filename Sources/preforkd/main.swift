import PreforkdCLI

PreforkdCommand.start()
