"""`python -m imex.cli`, as the tests and a checkout without the console script run it."""

from imex.cli import main

if __name__ == "__main__":
    main()
