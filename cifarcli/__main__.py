from cifarcli.entry import main

main()
