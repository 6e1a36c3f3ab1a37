"""gunicorn's settings for `make serve` (gunicorn -c config/gunicorn.py), from the environment.

PREFLOOP_BIND     address to listen on (default 127.0.0.1:8000: put a TLS reverse proxy in front)
WEB_CONCURRENCY   worker processes (default 2 per core + 1, at most 12)
PREFLOOP_WEB_WORKER   gthread (WSGI, threaded workers) or asgi (uvicorn's workers, config.asgi: an
                      arena stream waits without holding a thread)
PREFLOOP_WEB_THREADS  gthread: threads per worker (default 4): an arena stream holds one while it
                      relays; 1: sync workers
"""

import multiprocessing
import os

bind = os.environ.get("PREFLOOP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", min(12, 2 * multiprocessing.cpu_count() + 1)))
# The web process loads no model: requests are short, except the arena's answer streams (server-sent
# events relayed from the generation server), which wait on I/O: threaded workers keep those from
# holding a whole process each. A slow client is the proxy's to buffer.
threads = int(os.environ.get("PREFLOOP_WEB_THREADS", "4"))
if os.environ.get("PREFLOOP_WEB_WORKER", "gthread") == "asgi":
    worker_class, wsgi_app = "uvicorn_worker.UvicornWorker", "config.asgi:application"
    os.environ.setdefault("PREFLOOP_DB_POOL", "1")  # a request's thread is new each time: pool them
else:
    worker_class = "gthread" if threads > 1 else "sync"  # PREFLOOP_WEB_THREADS=1: plain sync workers
    wsgi_app = "config.wsgi:application"
timeout = int(os.environ.get("PREFLOOP_WEB_TIMEOUT", "60"))
graceful_timeout = 20
max_requests = 5000
max_requests_jitter = 500
accesslog = os.environ.get("PREFLOOP_ACCESS_LOG", "-") or None  # "" turns it off
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
