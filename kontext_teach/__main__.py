"""python -m kontext_teach COMMAND [options]: the series' command lines, one entry point.

    python -m kontext_teach train --help            train a Kontext LoRA on a folder of edit pairs
    python -m kontext_teach bench --help            time one full-size LoRA step, reference vs ours
    python -m kontext_teach mini-training --help    train the miniature on the toy world
    python -m kontext_teach build-embedded --help   build the untrained miniature (tokenizers, seeded weights)

Each is also a module of its own room (``python -m kontext_teach.training.train`` ...).
"""

import importlib
import sys

COMMANDS = {
    "train": ("kontext_teach.training.train", "train a Kontext LoRA on a folder of edit pairs"),
    "bench": ("kontext_teach.training.bench", "time one full-size LoRA training step, reference vs ours"),
    "mini-training": ("kontext_teach.toy.mini_training", "train the miniature Kontext on the toy world"),
    "build-embedded": ("kontext_teach.toy.build_embedded", "build the untrained miniature (tokenizers, weights)"),
}


def usage() -> str:
    lines = ["usage: python -m kontext_teach COMMAND [options]   (COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<16}{summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"python -m kontext_teach {name}", *rest]
    result = module.main(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
