package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseNamesTheKey(t *testing.T) {
	for _, c := range []struct{ key, value string }{
		{"keep", "0"}, {"max-age", "a week"}, {"min-interval", "-1h"}, {"dated-names", "maybe"}, {"colour", "red"},
	} {
		_, err := Parse([][2]string{{c.key, c.value}})
		if err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%s=%s: want an error naming the key, got %v", c.key, c.value, err)
		}
	}
	s, err := Parse([][2]string{{"keep", "3"}, {"max-age", "48h"}})
	if err != nil || s.Keep != 3 || s.MaxAge != 48*time.Hour {
		t.Fatalf("got %+v, %v", s, err)
	}
}

func TestPreBackupHonoursMinInterval(t *testing.T) {
	s := Settings{MinInterval: time.Hour}
	last := uint64(1_000_000_000)
	if r := PreBackup(s, Context{LastBackupMs: &last, NowMs: last + 59*60_000}); r == "" {
		t.Error("a backup 59 minutes after the last one should be skipped")
	}
	if r := PreBackup(s, Context{LastBackupMs: &last, NowMs: last + 61*60_000}); r != "" {
		t.Errorf("61 minutes later should proceed, got %q", r)
	}
	if r := PreBackup(s, Context{NowMs: last}); r != "" {
		t.Errorf("the first backup should proceed, got %q", r)
	}
}

func TestRetentionKeepsNewestByCountAndAge(t *testing.T) {
	now := uint64(100 * 86_400_000)
	var backups []Backup
	for i := 0; i < 20; i++ { // one a day, newest first
		backups = append(backups, Backup{Key: "b" + string(rune('a'+i)), LastModifiedMs: now - uint64(i)*86_400_000})
	}
	remove := Retention(Settings{Keep: 10, MaxAge: 168 * time.Hour}, backups, now)
	// Ages 0..7 days are within 168h (7 days exactly is not older); 8.. are too old.
	if len(remove) != 12 || remove[0] != "bi" {
		t.Fatalf("want the 12 backups older than 7 days removed, got %v", remove)
	}
	remove = Retention(Settings{Keep: 3}, backups, now)
	if len(remove) != 17 {
		t.Fatalf("keep=3 without max-age: want 17 removed, got %d", len(remove))
	}
	// The newest is kept even when everything is too old.
	old := []Backup{{Key: "x", LastModifiedMs: 1}, {Key: "y", LastModifiedMs: 2}}
	if remove := Retention(Settings{Keep: 1, MaxAge: time.Hour}, old, now); len(remove) != 1 || remove[0] != "x" {
		t.Fatalf("want only x removed, got %v", remove)
	}
}

func TestDatedNames(t *testing.T) {
	got := BackupName(Settings{DatedNames: true}, Context{PathPrefix: "etcd/prod", Revision: 42, NowMs: 0})
	if got != "etcd/prod.19700101T000000Z.r42.db" {
		t.Fatalf("got %q", got)
	}
	if BackupName(Settings{}, Context{}) != "" {
		t.Fatal("without dated-names the operator's default name is used")
	}
}
