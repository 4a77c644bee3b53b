from cell.cli.main import main

main()
