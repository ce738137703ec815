"""What the command lines of the bench scripts share: an option's default is
written once, in add_argument, and --help shows it after the option's text;
the script's first docstring paragraph heads the help as written."""
import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    pass


def parser(doc):
    """An ArgumentParser described by the first paragraph of `doc`."""
    return argparse.ArgumentParser(description=doc.split('\n\n')[0],
                                   formatter_class=HelpFormatter)
