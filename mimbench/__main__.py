from mimbench.cli import main

main()
