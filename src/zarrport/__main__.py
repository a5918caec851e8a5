from zarrport.cli import main

main()
