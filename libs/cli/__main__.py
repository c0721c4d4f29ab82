from libs.cli import main

main()
