"""``python -m softlabels``: the command line, also what ``torchrun -m softlabels`` starts on every rank."""

from softlabels.cli import main

if __name__ == "__main__":
    main()
