"""A backup-policy plugin written in Python: back up only when something
changed, and keep one backup per day for a week.

Configuration (the EtcdBackup's `backupPolicy.plugin.config`):

  skip-unchanged  "true" (default) or "false": skip a run when the cluster's
                  revision equals the newest backup's revision.
  window          optional "HH:MM-HH:MM" in UTC: run only inside it (a window
                  may wrap midnight, e.g. "22:00-04:00").
  days            how many UTC days to keep one backup for (default 7). The
                  newest backup of each of the last `days` days is kept;
                  every other backup is returned for deletion.

Built with componentize-py against the `backup-policy` world of
wit/plugin.wit; see docs/plugin-authoring.md.
"""

from typing import List, Optional, Tuple

import wit_world
from wit_world.exports import policy
from wit_world.imports import log, types
from componentize_py_types import Err

DAY_MS = 86_400_000
MINUTE_MS = 60_000


def invalid(message: str) -> Err:
    return Err(types.PluginError_InvalidConfig(message))


class Settings:
    """The parsed configuration; every problem names the key and the fix."""

    def __init__(self, config: List[Tuple[str, str]]):
        known = {"skip-unchanged", "window", "days"}
        values = dict(config)
        for key in values:
            if key not in known:
                raise invalid(
                    f"unknown key `{key}`; this policy understands {', '.join(sorted(known))}"
                )
        skip = values.get("skip-unchanged", "true").strip().lower()
        if skip not in ("true", "false"):
            raise invalid(f"`skip-unchanged` is `{skip}`; use true or false")
        self.skip_unchanged = skip == "true"
        self.window = parse_window(values.get("window"))
        days = values.get("days", "7").strip()
        if not days.isdigit() or not 1 <= int(days) <= 3650:
            raise invalid(f"`days` is `{days}`; use a whole number of days from 1 to 3650")
        self.days = int(days)


def parse_minute(text: str) -> int:
    hours, _, minutes = text.strip().partition(":")
    if not (hours.isdigit() and minutes.isdigit()):
        raise ValueError(text)
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(text)
    return h * 60 + m


def parse_window(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if text is None or not text.strip():
        return None
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError(text)
        return parse_minute(start), parse_minute(end)
    except ValueError:
        raise invalid(f"`window` is `{text}`; use HH:MM-HH:MM in UTC, e.g. 01:00-05:00")


def in_window(window: Tuple[int, int], now_ms: int) -> bool:
    start, end = window
    minute = (now_ms % DAY_MS) // MINUTE_MS
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


def fmt(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


class Policy(wit_world.exports.Policy):
    def pre_backup(self, config, ctx: policy.BackupContext) -> policy.PreBackupDecision:
        settings = Settings(config)
        if settings.window is not None and not in_window(settings.window, ctx.now_ms):
            start, end = settings.window
            return policy.PreBackupDecision_Skip(
                f"outside the backup window {fmt(start)}-{fmt(end)} UTC"
            )
        if settings.skip_unchanged and ctx.last_backup_revision == ctx.revision:
            return policy.PreBackupDecision_Skip(
                f"revision {ctx.revision} is unchanged since the last backup"
            )
        return policy.PreBackupDecision_Proceed()

    def backup_name(self, config, ctx: policy.BackupContext) -> Optional[str]:
        Settings(config)
        return None

    def retention(self, config, backups: List[types.ObjectInfo], now_ms: int) -> List[str]:
        settings = Settings(config)
        today = now_ms // DAY_MS
        # A backup whose age the backend does not know (0) is never deleted.
        undated = {b.key for b in backups if b.last_modified_ms == 0}
        newest_of_day = {}
        for b in backups:
            if b.last_modified_ms == 0:
                continue
            day = b.last_modified_ms // DAY_MS
            if today - day >= settings.days:
                continue
            best = newest_of_day.get(day)
            if best is None or b.last_modified_ms > best.last_modified_ms:
                newest_of_day[day] = b
        keep = undated | {b.key for b in newest_of_day.values()}
        delete = [b.key for b in backups if b.key not in keep]
        log.log(
            log.Level.DEBUG,
            f"retention: keeping {len(keep)} of {len(backups)} backups ({settings.days} days)",
        )
        return delete
