"""gunicorn settings of the Wagtail example site: the Django example's (``example_project/gunicorn.conf.py``:
preloaded search models, workers and threads by the cores, DEBUG off, the timeouts) with this site's app.

    cd example_wagtail && ../.venv/bin/python manage.py demo --no-serve --addrport 127.0.0.1:8000
    cd example_wagtail && ../.venv/bin/gunicorn       # reads ./gunicorn.conf.py; http://127.0.0.1:8000/

``manage.py demo --no-serve --addrport HOST:PORT`` sets up the site and points Wagtail's Site (page links,
"View live") at the address gunicorn will serve: give it the same address as ``--bind``. Options given on
the command line or in ``GUNICORN_CMD_ARGS`` win over this file. With DEBUG off neither ``/media/`` nor
``/static/`` are served by Django: put a web server in front, or set ``DJANGO_DEBUG=1`` to try it locally.
"""

from pathlib import Path
from runpy import run_path

_django_example = run_path(str(Path(__file__).resolve().parent.parent / "example_project" / "gunicorn.conf.py"))
globals().update({name: value for name, value in _django_example.items() if not name.startswith("__")})

wsgi_app = "wagtail_site.wsgi:application"
