"""``python -m emo.realtime``: the real-time loop, which lives in :mod:`emo.inference.realtime`."""

from emo.inference.realtime import main

if __name__ == "__main__":
    main()
