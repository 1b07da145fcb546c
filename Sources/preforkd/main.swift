import PreforkdCLI

PreforkdCommand.main()
