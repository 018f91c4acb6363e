"""Print the standard library's docstrings as JSON lines.

Run as ``python -I -S _stdlib_docs.py`` so that nothing but the standard library
is importable and no third-party import can patch stdlib objects: the output then
depends on the Python version alone, which keeps the corpus reproducible.
"""

import importlib
import inspect
import json
import sys
import warnings

SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3"}


def main() -> None:
    for name in sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in SKIP):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # platform-specific modules fail to import; skip them
            continue
        objects: list[object] = [module]
        for _, member in sorted(inspect.getmembers(module), key=lambda kv: kv[0]):
            if (inspect.isclass(member) or inspect.isfunction(member)) and getattr(member, "__module__", None) == name:
                objects.append(member)
                if inspect.isclass(member):
                    objects.extend(v for _, v in sorted(vars(member).items()) if inspect.isfunction(v))
        for obj in objects:
            doc = inspect.getdoc(obj)
            if doc:
                sys.stdout.write(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main()
