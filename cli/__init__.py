"""The ``fedchain`` command line: click commands that parse, call into ``fedchain.node``, print."""
