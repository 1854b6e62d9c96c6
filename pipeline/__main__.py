from vadpipe.cli import main

main()
