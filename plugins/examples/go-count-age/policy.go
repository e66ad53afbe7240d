// Package main is a backup-policy plugin written in Go: keep the newest N
// backups and none older than a maximum age, and leave a minimum interval
// between backups.
//
// Configuration (the EtcdBackup's `backupPolicy.plugin.config`):
//
//	keep          how many of the newest backups to keep (default 10, at least 1)
//	max-age       delete backups older than this, a Go duration (default 168h;
//	              "0s" keeps backups of any age)
//	min-interval  skip a run when the newest backup is younger than this, a Go
//	              duration (default 0s: never skip)
//	dated-names   "true": name backups <path>.<UTC time>.r<revision>.db
//	              instead of the operator's default (default false)
//
// The decisions live in this file as plain Go (tested natively with `go
// test`); abi.go connects them to the component's exports.
package main

import (
	"fmt"
	"sort"
	"strconv"
	"time"
)

// Settings is the parsed configuration.
type Settings struct {
	Keep        int
	MaxAge      time.Duration
	MinInterval time.Duration
	DatedNames  bool
}

// ConfigError is an invalid-config plugin error: it names the key and the fix.
type ConfigError string

func (e ConfigError) Error() string { return string(e) }

// Parse validates the key/value configuration.
func Parse(config [][2]string) (Settings, error) {
	s := Settings{Keep: 10, MaxAge: 168 * time.Hour}
	for _, kv := range config {
		key, value := kv[0], kv[1]
		switch key {
		case "keep":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 {
				return s, ConfigError(fmt.Sprintf("`keep` is %q; use a whole number of backups, at least 1", value))
			}
			s.Keep = n
		case "max-age", "min-interval":
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return s, ConfigError(fmt.Sprintf("`%s` is %q; use a Go duration such as 36h or 90m", key, value))
			}
			if key == "max-age" {
				s.MaxAge = d
			} else {
				s.MinInterval = d
			}
		case "dated-names":
			b, err := strconv.ParseBool(value)
			if err != nil {
				return s, ConfigError(fmt.Sprintf("`dated-names` is %q; use true or false", value))
			}
			s.DatedNames = b
		default:
			return s, ConfigError(fmt.Sprintf("unknown key `%s`; this policy understands keep, max-age, min-interval, dated-names", key))
		}
	}
	return s, nil
}

// Context is what the operator knows before a backup.
type Context struct {
	PathPrefix   string
	Revision     int64
	LastBackupMs *uint64
	NowMs        uint64
}

// PreBackup returns "" to proceed, or the reason to skip.
func PreBackup(s Settings, ctx Context) string {
	if s.MinInterval > 0 && ctx.LastBackupMs != nil && ctx.NowMs >= *ctx.LastBackupMs {
		age := time.Duration(ctx.NowMs-*ctx.LastBackupMs) * time.Millisecond
		if age < s.MinInterval {
			return fmt.Sprintf("the last backup is %s old, less than min-interval %s", age.Round(time.Second), s.MinInterval)
		}
	}
	return ""
}

// BackupName returns the key of the next backup, or "" for the default.
func BackupName(s Settings, ctx Context) string {
	if !s.DatedNames {
		return ""
	}
	at := time.UnixMilli(int64(ctx.NowMs)).UTC().Format("20060102T150405Z")
	return fmt.Sprintf("%s.%s.r%d.db", ctx.PathPrefix, at, ctx.Revision)
}

// Backup is one stored backup.
type Backup struct {
	Key            string
	LastModifiedMs uint64
}

// Retention returns the keys to delete: beyond the newest `keep`, or older
// than max-age. The newest backup is always kept; so is one whose age the
// backend does not know (0).
func Retention(s Settings, backups []Backup, nowMs uint64) []string {
	sorted := append([]Backup(nil), backups...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].LastModifiedMs != sorted[j].LastModifiedMs {
			return sorted[i].LastModifiedMs > sorted[j].LastModifiedMs
		}
		return sorted[i].Key > sorted[j].Key
	})
	var remove []string
	for i, b := range sorted {
		if i == 0 || b.LastModifiedMs == 0 {
			continue
		}
		tooOld := s.MaxAge > 0 && nowMs > b.LastModifiedMs &&
			time.Duration(nowMs-b.LastModifiedMs)*time.Millisecond > s.MaxAge
		if i >= s.Keep || tooOld {
			remove = append(remove, b.Key)
		}
	}
	return remove
}
