# syntax=docker/dockerfile:1
#
# Two images from one file (compose.yaml builds both; docs/self-hosting.md explains them):
#
#   docker build --target engine -t nst-discord-engine .   the engine: PyTorch (CUDA build; on the CPU with
#                                                           ENGINE_DEVICE=cpu), the VGG19 weights, the default
#                                                           presets, a C compiler for ENGINE_COMPILE; also runs the bot
#   docker build --target bot -t nst-discord-bot .         the bot alone: discord.py, aiohttp, Pillow; no torch
#
# The GPU driver is not in the image: the NVIDIA container toolkit mounts the host's driver into the container.
# Layers go from the least to the most often changed: OS and user, pinned dependencies, then the source.

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The unprivileged user both services run as. A fixed uid/gid, so the owner of files in the volumes is stable.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin \
        --no-log-init app

WORKDIR /app

# The pinned dependencies of pyproject.toml as a pip constraints file: the one place versions are written
# stays pyproject.toml, and this layer only changes when it does.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/app/constraints.txt', 'w').write(chr(10).join(deps) + chr(10))"

# ---------------------------------------------------------------------------------------------------------------
FROM base AS wheel

# The project as a wheel, built once; the engine installs it without its source tree.
COPY README.md ./
COPY nst_engine/ nst_engine/
COPY bot/ bot/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------------------
FROM base AS bot

# What `bot/` imports, at the versions pyproject.toml pins (tests/test_deploy_files.py keeps this list complete).
RUN pip install --constraint /app/constraints.txt "discord.py" aiohttp pillow nats-py

COPY bot/ bot/
# /data holds the SQLite journal (a volume in compose.yaml); a new named volume takes over its owner.
RUN mkdir -p /data && chown app:app /data

ENV BOT_DB_PATH=/data/bot.sqlite3 \
    BOT_HEALTH_FILE=/tmp/nst-bot.alive

USER 10001:10001

# Healthy while the bot keeps touching BOT_HEALTH_FILE, which it does while its Discord gateway is connected.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, time; sys.exit(0 if time.time() - os.stat(os.environ['BOT_HEALTH_FILE']).st_mtime < 90 else 1)"]

# The bot stops cleanly on Ctrl-C (KeyboardInterrupt); as PID 1 it would ignore a plain SIGTERM.
STOPSIGNAL SIGINT
CMD ["python", "-m", "bot"]

# ---------------------------------------------------------------------------------------------------------------
FROM base AS engine

# Tells the NVIDIA container toolkit which driver libraries to mount (CUDA compute; nvidia-smi).
# ENGINE_DEVICE=cuda: without a visible GPU the engine stops at start and says why, instead of quietly running
# ~100x slower on the CPU (compose.cpu.yaml sets cpu). Every job has a new image size: expandable segments let
# PyTorch's allocator grow in place instead of fragmenting into blocks of past sizes.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ENGINE_DEVICE=cuda \
    PYTORCH_ALLOC_CONF=expandable_segments:True

# ENGINE_COMPILE=true: triton builds a small C module at first use (gcc and Python's headers, which the python
# image has), inductor on the CPU builds C++. Checked here, so a missing piece fails the build, not a warm-up.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/* \
 && printf '#include <Python.h>\nint nst_probe(void) { return Py_IsInitialized(); }\n' > /tmp/probe.c \
 && gcc -shared -fPIC -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
        -o /tmp/probe.so /tmp/probe.c \
 && rm /tmp/probe.c /tmp/probe.so

# The heavy layer (torch and the CUDA libraries, a few GB): rebuilt only when pyproject.toml changes.
RUN pip install --requirement /app/constraints.txt

COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
 && rm -rf /wheels \
 && python -c "from nst_engine.core.vgg import load_caffe_weights; w = load_caffe_weights(); assert len(w) == 16, len(w); print('VGG19 weights: %d conv layers' % len(w))"

# The default presets (public-domain paintings), downloaded and verified at build time into /presets
# (a volume in compose.yaml: a new named volume starts with these files). A copy stays in /app/presets.
COPY presets/manifest.json presets/manifest.json
RUN python -m nst_engine fetch-presets --manifest presets/manifest.json --dir /presets \
 && cp /presets/* presets/ \
 && chown -R app:app /presets

ENV ENGINE_HOST=0.0.0.0 \
    ENGINE_PORT=8765 \
    ENGINE_PRESETS_DIR=/presets

USER 10001:10001
EXPOSE 8765

# /readyz is 200 once every worker has loaded the weights and touched its device (503 before, and when broken);
# a worker is ready only on the device ENGINE_DEVICE asked for.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % (os.environ.get('ENGINE_PORT') or '8765'), timeout=4)"]

CMD ["python", "-m", "nst_engine", "serve"]
