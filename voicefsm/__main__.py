from voicefsm.cli import main

main()
