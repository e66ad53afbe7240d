//go:build wasip1

// The component-model glue of the backup-policy world, written by hand for
// the standard Go toolchain (GOOS=wasip1, -buildmode=c-shared, Go 1.24+).
//
// Why by hand: wit-bindgen-go (go.bytecodealliance.org v0.7.0) generates
// exports whose parameters are typed pointers such as *[2]string, which
// only TinyGo accepts; Go's //go:wasmexport takes scalars and
// unsafe.Pointer. The world is small, so its canonical-ABI lifting and
// lowering fit in this file. It follows wit/plugin.wit at
// etcd-operator:plugin@0.1.1; a change to those signatures must change this
// file too (docs/plugin-authoring.md, "Versioning").

package main

import (
	"strconv"
	"unsafe"
)

// Memory handed to the host through cabi_realloc, kept reachable so Go's
// garbage collector leaves it alone until the call that uses it returns.
var pinned [][]uint64

// Values the last result points at, alive until the next call.
var keep []any

// The return area of every export: result<T, plugin-error> is a byte
// discriminant at 0 and a payload of at most 12 bytes at 4.
var ret [4]uint32

// Exported as cabi_export_realloc, not cabi_realloc: wasm-tools' component
// new lets the WASI adapter allocate its state with a main-module
// cabi_realloc, which it calls from inside Go's runtime initialisation,
// before a Go export may run (the instance traps). Under this name it serves
// only the canonical ABI of the exports, and the adapter uses memory.grow.
//
//go:wasmexport cabi_export_realloc
func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	if newSize == 0 {
		return unsafe.Pointer(uintptr(align))
	}
	buf := make([]uint64, (newSize+7)/8) // 8-byte aligned, enough for every WIT type
	pinned = append(pinned, buf)
	p := unsafe.Pointer(unsafe.SliceData(buf))
	if oldSize > 0 {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(old), oldSize))
	}
	return p
}

//go:wasmimport etcd-operator:plugin/log@0.1.1 log
func hostLog(level uint32, msg unsafe.Pointer, msgLen uint32)

const logDebug = 1

func logf(level uint32, msg string) {
	hostLog(level, unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// liftString copies a string out of guest memory the host wrote.
func liftString(ptr unsafe.Pointer, n uint32) string {
	if n == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(ptr), n))
}

// liftConfig reads list<tuple<string, string>>: 16 bytes per entry.
func liftConfig(ptr unsafe.Pointer, n uint32) [][2]string {
	out := make([][2]string, n)
	for i := range out {
		e := (*[4]uint32)(unsafe.Add(ptr, 16*i))
		out[i][0] = liftString(unsafe.Pointer(uintptr(e[0])), e[1])
		out[i][1] = liftString(unsafe.Pointer(uintptr(e[2])), e[3])
	}
	return out
}

// lowerString stores a string's pointer and length at ret[i], ret[i+1].
func lowerString(i int, s string) {
	keep = append(keep, s)
	ret[i] = uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
	ret[i+1] = uint32(len(s))
}

// Error cases of plugin-error, in WIT order.
const (
	errInvalidConfig = 2
	errOther         = 4
)

func returnError(err error) unsafe.Pointer {
	ret[0] = 1
	code := uint32(errOther)
	if _, ok := err.(ConfigError); ok {
		code = errInvalidConfig
	}
	ret[1] = code
	lowerString(2, err.Error())
	return unsafe.Pointer(&ret)
}

func begin() {
	keep = nil
}

// end releases the host's buffers: everything needed was copied out.
func end() {
	pinned = nil
}

func liftContext(path unsafe.Pointer, pathLen uint32, revision int64, lastMsSet uint32, lastMs uint64, now uint64) Context {
	ctx := Context{PathPrefix: liftString(path, pathLen), Revision: revision, NowMs: now}
	if lastMsSet != 0 {
		v := lastMs
		ctx.LastBackupMs = &v
	}
	return ctx
}

// withContext lifts the arguments both context hooks take, parses the
// configuration, and lowers `hook`'s answer: "" is the none/proceed case,
// anything else the string case (skip reason, backup name).
func withContext(cfg unsafe.Pointer, cfgLen uint32, path unsafe.Pointer, pathLen uint32, revision int64,
	lastMsSet uint32, lastMs uint64, now uint64, hook func(Settings, Context) string) unsafe.Pointer {
	begin()
	config := liftConfig(cfg, cfgLen)
	ctx := liftContext(path, pathLen, revision, lastMsSet, lastMs, now)
	end()
	s, err := Parse(config)
	if err != nil {
		return returnError(err)
	}
	ret[0] = 0
	if answer := hook(s, ctx); answer != "" {
		ret[1] = 1
		lowerString(2, answer)
	} else {
		ret[1] = 0
	}
	return unsafe.Pointer(&ret)
}

//go:wasmexport etcd-operator:plugin/policy@0.1.1#pre-backup
func preBackup(cfg unsafe.Pointer, cfgLen uint32,
	_ unsafe.Pointer, _ uint32, _ unsafe.Pointer, _ uint32, // namespace, name
	path unsafe.Pointer, pathLen uint32, revision int64,
	_ unsafe.Pointer, _ uint32, // etcd-version
	_ uint32, _ int64, // last-backup-revision
	lastMsSet uint32, lastMs uint64, now uint64,
) unsafe.Pointer {
	return withContext(cfg, cfgLen, path, pathLen, revision, lastMsSet, lastMs, now, PreBackup)
}

//go:wasmexport etcd-operator:plugin/policy@0.1.1#backup-name
func backupName(cfg unsafe.Pointer, cfgLen uint32,
	_ unsafe.Pointer, _ uint32, _ unsafe.Pointer, _ uint32,
	path unsafe.Pointer, pathLen uint32, revision int64,
	_ unsafe.Pointer, _ uint32,
	_ uint32, _ int64,
	lastMsSet uint32, lastMs uint64, now uint64,
) unsafe.Pointer {
	return withContext(cfg, cfgLen, path, pathLen, revision, lastMsSet, lastMs, now, BackupName)
}

//go:wasmexport etcd-operator:plugin/policy@0.1.1#retention
func retention(cfg unsafe.Pointer, cfgLen uint32, list unsafe.Pointer, listLen uint32, now uint64) unsafe.Pointer {
	begin()
	config := liftConfig(cfg, cfgLen)
	// object-info: key (ptr, len) at 0, size u64 at 8, last-modified-ms u64 at 16.
	backups := make([]Backup, listLen)
	for i := range backups {
		e := unsafe.Add(list, 24*i)
		w := (*[2]uint32)(e)
		backups[i] = Backup{
			Key:            liftString(unsafe.Pointer(uintptr(w[0])), w[1]),
			LastModifiedMs: *(*uint64)(unsafe.Add(e, 16)),
		}
	}
	end()
	s, err := Parse(config)
	if err != nil {
		return returnError(err)
	}
	remove := Retention(s, backups, now)
	logf(logDebug, "go-count-age: deleting "+strconv.Itoa(len(remove))+" of "+strconv.Itoa(len(backups))+" backups")
	// list<string>: an array of (ptr, len) pairs.
	pairs := make([]uint32, 2*len(remove)+1)
	for i, k := range remove {
		keep = append(keep, k)
		pairs[2*i] = uint32(uintptr(unsafe.Pointer(unsafe.StringData(k))))
		pairs[2*i+1] = uint32(len(k))
	}
	keep = append(keep, pairs)
	ret[0] = 0
	ret[1] = uint32(uintptr(unsafe.Pointer(unsafe.SliceData(pairs))))
	ret[2] = uint32(len(remove))
	return unsafe.Pointer(&ret)
}

func main() {}
