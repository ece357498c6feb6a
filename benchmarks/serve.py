"""emo-serve under load: requests/s and p50/p95 latency of /predict and /live, N concurrent clients.

python benchmarks/serve.py [--clients 1 8] [--seconds 10] [--model vgg_s] [--backend torch]

Starts ``emo-serve`` (``python -m emo.inference.serve``) on 127.0.0.1 in its own process, then,
for each client count, runs that many clients for ``--seconds`` against each endpoint, all
sending the same 640x480 JPEG frame with one ~150 px face (``emo.samples.moving_face_frames``):
``/predict`` clients upload it and wait for the answer, ``/live`` clients each hold a WebSocket
and send the next frame when the previous one is answered (as the page does). Latency is
measured at the client, from sending to the whole answer. Prints a Markdown table. Both endpoints
run without TTA (``/predict?tta=none``; a model's recorded TTA, e.g. flip, doubles the network's
share of the work), so the numbers stay comparable with the README's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import cv2
import httpx
from websockets.asyncio.client import connect

from emo.samples import moving_face_frames


async def load(
    url: str, endpoint: str, clients: int, seconds: float, frame: bytes
) -> tuple[float, list[float], int]:
    """Wall time (s, to the last answer), latencies (s) and errors of ``clients`` clients sending
    requests for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    stop = start + seconds

    async def predict_client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = await http.post("/predict?tta=none", files={"file": ("frame.jpg", frame, "image/jpeg")})
            if r.status_code == 200 and r.json()["faces"]:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    async def live_client() -> None:
        nonlocal errors
        async with connect(url.replace("http", "ws") + "/live", max_size=None) as ws:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await ws.send(frame)
                answer = await ws.recv()
                if '"error"' in answer:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - t0)

    if endpoint == "predict":
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            await asyncio.gather(*(predict_client(http) for _ in range(clients)))
    else:
        await asyncio.gather(*(live_client() for _ in range(clients)))
    return time.perf_counter() - start, latencies, errors


def start_server(model: str | None, backend: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "emo.inference.serve", "--port", str(port), "--backend", backend]
    cmd += ["--log-level", "warning"] + (["--model", model] if model else [])
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            sys.exit(f"emo-serve exited with status {proc.returncode}")
        try:
            httpx.get(f"{url}/health").raise_for_status()
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.terminate()
                sys.exit("emo-serve did not start within 2 minutes")
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients (default: 1 8)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="time per row (default: 10)")
    parser.add_argument(
        "--model", default=None, help="bundled name or checkpoint (default: the default model)"
    )
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    args = parser.parse_args()
    frame = cv2.imencode(".jpg", moving_face_frames(1)[0], [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    proc, url = start_server(args.model, args.backend)
    try:
        health = httpx.get(f"{url}/health").json()
        asyncio.run(load(url, "predict", 1, 1.0, frame))  # warm-up
        rows = []
        for endpoint in ("predict", "live"):
            for clients in args.clients:
                wall, lat, errors = asyncio.run(load(url, endpoint, clients, args.seconds, frame))
                ms = sorted(1e3 * t for t in lat)
                p50 = statistics.median(ms) if ms else float("nan")
                p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else float("nan")
                rows.append((endpoint, clients, len(ms), len(ms) / wall, p50, p95, errors))
    finally:
        proc.terminate()
        proc.wait(30)
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{health['model']} ({health['backend']}), 640x480 JPEG ({len(frame) / 1e3:.0f} kB), one face; "
        f"{args.seconds:g} s per row; {os.cpu_count()} CPUs, load average {load_avg:.1f}"
    )
    print("| endpoint | clients | answers | requests/s | p50 ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for endpoint, clients, n, rate, p50, p95, errors in rows:
        print(f"| /{endpoint} | {clients} | {n} | {rate:.1f} | {p50:.0f} | {p95:.0f} | {errors} |")


if __name__ == "__main__":
    main()
