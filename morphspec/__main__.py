"""`python -m morphspec`: the same command line as `morph`."""

from morphspec.cli.app import main

if __name__ == "__main__":
    main()
