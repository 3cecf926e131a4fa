from meshlet.cli.main import main

main()
