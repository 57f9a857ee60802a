"""python -m lowvram demo — see lowvram/demo.py."""
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m lowvram demo [--model smollm2|tiny] [--tokens N] [--no-compile]")
        return 0 if argv else 2
    if argv[0] == "demo":
        from .demo import main as demo_main
        return demo_main(argv[1:])
    print(f"lowvram: unknown command {argv[0]!r}; try: python -m lowvram demo", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
