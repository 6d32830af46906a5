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

# `docker stop` sends SIGTERM, which the bot handles like Ctrl-C: jobs stay in the journal, the gateway closes.
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

# The default presets (public-domain paintings) into /presets, each checked against presets/manifest.json's
# size and sha256 (/presets is a volume in compose.yaml: a new named volume starts with these files; a copy
# stays in /app/presets). Where they come from (docs/self-hosting.md, "Building without internet access"):
#   --build-arg PRESETS=download   the default: downloaded at build time (needs GitHub);
#   --build-arg PRESETS=context    the files in ./presets of the build context (put there beforehand with
#                                  `python -m nst_engine fetch-presets` or by hand); nothing is downloaded;
#   --build-arg PRESETS=none       no paintings: the engine offers its generated styles; add presets later.
ARG PRESETS=download
COPY presets/ /tmp/presets/
RUN set -eu; mkdir -p /presets presets; cp /tmp/presets/manifest.json presets/; \
    case "$PRESETS" in \
      download) python -m nst_engine fetch-presets --manifest presets/manifest.json --dir /presets \
                || { echo "no internet for the presets? build with --build-arg PRESETS=context or PRESETS=none" >&2; \
                     exit 1; } ;; \
      context) python -c "import shutil, sys; from pathlib import Path; from nst_engine.fetch_presets import load_manifest; \
names = [e.filename for e in load_manifest(Path('presets/manifest.json'))]; \
missing = [n for n in names if not (Path('/tmp/presets') / n).is_file()]; \
sys.exit('PRESETS=context: not in ./presets of the build context: ' + ', '.join(missing)) if missing else None; \
[shutil.copy(Path('/tmp/presets') / n, '/presets/') for n in names]"; \
               python -m nst_engine fetch-presets --manifest presets/manifest.json --dir /presets --retries 0 ;; \
      none) echo "PRESETS=none: no default presets in this image; the generated styles remain" ;; \
      *) echo "PRESETS must be download, context or none, not '$PRESETS'" >&2; exit 2 ;; \
    esac; \
    find /presets -maxdepth 1 -type f -exec chmod 0644 {} + -exec cp {} presets/ \; ; \
    rm -rf /tmp/presets; chown -R app:app /presets

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
