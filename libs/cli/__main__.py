from corral_libs.cli import main

main()
