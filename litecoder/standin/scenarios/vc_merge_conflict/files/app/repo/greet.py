import sys


def main(argv):
    print("Hello, world!")


if __name__ == "__main__":
    main(sys.argv[1:])
