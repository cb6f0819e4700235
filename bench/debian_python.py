"""The bench scripts' numpy, torch and matplotlib come from Debian's
python3 (scripts/install_deps.sh installs them there); another python3 first
on PATH (pyenv, conda) may lack them. `import_or_rerun` imports the modules
named, or runs the script again under /usr/bin/python3 when that is another
interpreter, or says what is missing.
"""
import importlib
import os
import sys

DEBIAN = "/usr/bin/python3"


def rerun_under_debian(extra_argv=()):
    """Replaces this process with the same script under Debian's python3,
    with `extra_argv` appended; returns if that is this interpreter already
    (or there is none)."""
    if os.path.exists(DEBIAN) and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN):
        sys.stdout.flush()
        os.execv(DEBIAN, [DEBIAN] + sys.argv + list(extra_argv))


def import_or_rerun(names):
    """The modules `names`, imported; if one is missing, the script again
    under Debian's python3, else exit naming them."""
    try:
        return [importlib.import_module(name) for name in names]
    except ImportError:
        rerun_under_debian()
        sys.exit("%s needs %s: run it with Debian's %s after scripts/install_deps.sh"
                 % (sys.argv[0], " and ".join(names), DEBIAN))
