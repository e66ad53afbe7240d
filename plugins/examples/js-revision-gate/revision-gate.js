// A backup-policy plugin written in JavaScript: back up only after enough
// writes, and keep the newest N backups.
//
// Configuration (the EtcdBackup's `backupPolicy.plugin.config`):
//   min-revisions  skip a run until the revision moved this far since the
//                  newest backup (default 1: skip only unchanged revisions)
//   keep           how many of the newest backups to keep (default 5)
//
// Built with componentize-js against the `backup-policy` world of
// wit/plugin.wit; see docs/plugin-authoring.md.

function fail(tag, message) {
  return { tag, val: message };
}

function settings(entries) {
  const out = { minRevisions: 1, keep: 5 };
  for (const [key, value] of entries) {
    const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
    if (key === "min-revisions") {
      if (!(n >= 1)) throw fail("invalid-config", `\`min-revisions\` is \`${value}\`; use a whole number, at least 1`);
      out.minRevisions = n;
    } else if (key === "keep") {
      if (!(n >= 1)) throw fail("invalid-config", `\`keep\` is \`${value}\`; use a whole number of backups, at least 1`);
      out.keep = n;
    } else {
      throw fail("invalid-config", `unknown key \`${key}\`; this policy understands min-revisions, keep`);
    }
  }
  return out;
}

export const policy = {
  preBackup(config, ctx) {
    const s = settings(config);
    if (ctx.lastBackupRevision !== undefined) {
      const moved = ctx.revision - ctx.lastBackupRevision;
      if (moved < BigInt(s.minRevisions)) {
        return { tag: "skip", val: `${moved} revisions since the last backup, fewer than min-revisions ${s.minRevisions}` };
      }
    }
    return { tag: "proceed" };
  },

  backupName(config, _ctx) {
    settings(config);
    return undefined;
  },

  retention(config, backups, _nowMs) {
    const s = settings(config);
    const newestFirst = [...backups].sort((a, b) =>
      a.lastModifiedMs === b.lastModifiedMs ? (a.key < b.key ? 1 : -1) : a.lastModifiedMs < b.lastModifiedMs ? 1 : -1,
    );
    return newestFirst.slice(s.keep).map((b) => b.key);
  },
};
