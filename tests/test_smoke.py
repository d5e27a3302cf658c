import os
import subprocess
import sys
from pathlib import Path


def test_login_page_renders(client, network):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"Log in" in response.content


def test_the_quickstart_runs_tasks_eagerly_without_broker_warnings(tmp_path):
    """No Redis configured: tasks run in the process, and the console stays free of kombu's
    "No hostname was supplied" on every task."""
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "CELERY_TASK_ALWAYS_EAGER",
                        "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(DJANGO_SETTINGS_MODULE="partnerhub.settings",
               DATABASE_URL=f"sqlite:///{tmp_path / 'quickstart.sqlite3'}")
    code = ("from attribution.tasks import recount_common_words; "
            "print('result', recount_common_words.delay().get())")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=root,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "result 0" in result.stdout  # ran eagerly (SQLite has no words to count)
    assert "No hostname" not in result.stderr
