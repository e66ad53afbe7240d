// A storage plugin written in JavaScript: backups on any WebDAV server
// (nginx with the dav and dav-ext modules, Apache mod_dav, rclone serve
// webdav, ...), under a base URL.
//
// Configuration (the `spec.*.plugin.config` block and its Secret):
//   url          required; base URL of a WebDAV collection, e.g.
//                http://webdav.backups:8080/etcd/ (list it in allowedEndpoints)
//   username     optional; with `password`, HTTP Basic authentication
//   password     optional
//   token        optional; sent as `Authorization: Bearer <token>`
//
// Uploads stream straight into one PUT (memory stays bounded by one chunk)
// under `<url>/.uploads/<random>`; `complete` moves the object to its key
// with MOVE, so nothing is visible under the key before it is whole, and an
// aborted upload deletes its temporary object.
//
// Built with componentize-js against the `storage-backend` world of
// wit/plugin.wit; see docs/plugin-authoring.md.

import { handle } from "wasi:http/outgoing-handler@0.2.12";
import { Fields, OutgoingRequest, OutgoingBody } from "wasi:http/types@0.2.12";
import { log } from "etcd-operator:plugin/log@0.1.1";

const UPLOADS = ".uploads/";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// --- errors --------------------------------------------------------------

/** A `plugin-error` for the operator: thrown values become the `err` case. */
function fail(tag, message) {
  return { tag, val: message };
}

function statusError(what, status, body) {
  const detail = body ? `: ${body.slice(0, 200)}` : "";
  const message = `${what}: HTTP ${status}${detail}`;
  if (status === 404) return fail("not-found", message);
  if (status === 401 || status === 403) {
    return fail("unauthorized", `${message}; check username/password or token`);
  }
  if (status === 408 || status === 429 || status >= 500) return fail("transient", message);
  return fail("other", message);
}

// --- configuration -------------------------------------------------------

function base64(bytes) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += alphabet[(n >> 18) & 63] + alphabet[(n >> 12) & 63];
    out += i + 1 < bytes.length ? alphabet[(n >> 6) & 63] : "=";
    out += i + 2 < bytes.length ? alphabet[n & 63] : "=";
  }
  return out;
}

function parseConfig(entries) {
  const config = new Map(entries);
  const known = new Set(["url", "username", "password", "token"]);
  for (const key of config.keys()) {
    if (!known.has(key)) {
      throw fail("invalid-config", `unknown key \`${key}\`; this plugin understands url, username, password, token`);
    }
  }
  const url = config.get("url");
  if (!url) {
    throw fail("invalid-config", "missing key `url`: the base URL of a WebDAV collection, e.g. http://webdav:8080/etcd/");
  }
  const m = /^(https?):\/\/([^/?#]+)(\/[^?#]*)?$/i.exec(url.trim());
  if (!m) {
    throw fail("invalid-config", `\`url\` is \`${url}\`; write it as http(s)://host[:port]/path/`);
  }
  let path = m[3] ?? "/";
  if (!path.endsWith("/")) path += "/";
  let authorization;
  if (config.has("token")) {
    authorization = `Bearer ${config.get("token")}`;
  } else if (config.has("username") || config.has("password")) {
    if (!config.has("username") || !config.has("password")) {
      throw fail("invalid-config", "`username` and `password` go together; give both or neither");
    }
    authorization = `Basic ${base64(encoder.encode(`${config.get("username")}:${config.get("password")}`))}`;
  }
  return { scheme: m[1].toLowerCase(), authority: m[2], path, authorization };
}

// --- HTTP over wasi:http -------------------------------------------------

/** `key` as a URL path below the base path, each segment percent-encoded. */
function keyPath(site, key) {
  return site.path + key.split("/").map(encodeURIComponent).join("/");
}

function methodOf(name) {
  const standard = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
  return standard.includes(name) ? { tag: name.toLowerCase() } : { tag: "other", val: name };
}

/** Build a request; returns it with its body handle. */
function request(site, method, path, headers = []) {
  const fields = new Fields();
  if (site.authorization) fields.append("authorization", encoder.encode(site.authorization));
  for (const [name, value] of headers) fields.append(name, encoder.encode(value));
  const req = new OutgoingRequest(fields);
  req.setMethod(methodOf(method));
  req.setScheme({ tag: site.scheme === "https" ? "HTTPS" : "HTTP" });
  req.setAuthority(site.authority);
  req.setPathWithQuery(path);
  return { req, body: req.body() };
}

/** Wait for the response of a sent request. */
function awaitResponse(future, what) {
  const pollable = future.subscribe();
  pollable.block();
  pollable[Symbol.dispose]?.();
  const outcome = future.get();
  future[Symbol.dispose]?.();
  if (outcome === undefined) throw fail("transient", `${what}: no response`);
  if (outcome.tag === "err") throw fail("transient", `${what}: the response was already taken`);
  const result = outcome.val;
  if (result.tag === "err") {
    const code = result.val;
    const detail = code.val === undefined ? code.tag : `${code.tag} ${JSON.stringify(code.val, (_, v) => (typeof v === "bigint" ? v.toString() : v))}`;
    throw fail("transient", `${what}: ${detail}`);
  }
  return result.val;
}

/** Write all of `bytes` to an output stream, waiting for capacity. */
function writeAll(stream, bytes) {
  let offset = 0;
  while (offset < bytes.length) {
    const permit = Number(stream.checkWrite());
    if (permit === 0) {
      const pollable = stream.subscribe();
      pollable.block();
      pollable[Symbol.dispose]?.();
      continue;
    }
    const n = Math.min(permit, bytes.length - offset);
    stream.write(bytes.subarray(offset, offset + n));
    offset += n;
  }
}

function header(response, name) {
  const values = response.headers().get(name);
  return values.length ? decoder.decode(values[0]) : undefined;
}

/** Read a whole (small) response body as text. */
function readText(response) {
  const body = response.consume();
  const stream = body.stream();
  const parts = [];
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (e) {
      if (e?.payload?.tag === "closed" || e?.tag === "closed") break;
      throw fail("transient", `reading a response body failed: ${JSON.stringify(e)}`);
    }
    parts.push(decoder.decode(chunk, { stream: true }));
  }
  stream[Symbol.dispose]?.();
  body[Symbol.dispose]?.();
  return parts.join("");
}

/** Send a request with an optional small body; returns status and text. */
function exchange(site, method, path, what, { headers = [], text } = {}) {
  const bytes = encoder.encode(text ?? "");
  // A known length: servers refuse a chunked (or any) body on MKCOL and DELETE.
  const { req, body } = request(site, method, path, [...headers, ["content-length", String(bytes.length)]]);
  if (bytes.length > 0) {
    const stream = body.write();
    writeAll(stream, bytes);
    stream.blockingFlush();
    stream[Symbol.dispose]?.();
  }
  OutgoingBody.finish(body, undefined);
  const response = awaitResponse(handle(req, undefined), what);
  const status = response.status();
  const reply = readText(response);
  response[Symbol.dispose]?.();
  return { status, text: reply };
}

/** Create every collection on the way to `key` (MKCOL; existing is fine). */
function makeParents(site, key) {
  const segments = key.split("/").slice(0, -1);
  let prefix = "";
  for (const segment of segments) {
    prefix += `${segment}/`;
    const { status, text } = exchange(site, "MKCOL", keyPath(site, prefix), `MKCOL ${prefix}`);
    // 201 created, 405 already exists (some servers answer 409 for a file in the way).
    if (status !== 201 && status !== 405 && status !== 200) {
      throw statusError(`creating collection ${prefix}`, status, text);
    }
  }
}

// --- PROPFIND listing ----------------------------------------------------

/** Pull the responses out of a 207 multistatus; namespace prefixes vary by server. */
function parseMultistatus(xml) {
  const items = [];
  const responses = xml.match(/<([A-Za-z0-9]+:)?response[\s>][\s\S]*?<\/([A-Za-z0-9]+:)?response>/g) ?? [];
  for (const r of responses) {
    const tag = (name) => {
      const m = new RegExp(`<(?:[A-Za-z0-9]+:)?${name}(?:\\s[^>]*)?>([\\s\\S]*?)</(?:[A-Za-z0-9]+:)?${name}>`).exec(r);
      return m ? m[1].trim() : undefined;
    };
    const href = tag("href");
    if (href === undefined) continue;
    const collection = /<(?:[A-Za-z0-9]+:)?collection\s*\/?>/.test(r);
    const size = Number(tag("getcontentlength") ?? 0);
    const modified = Date.parse(tag("getlastmodified") ?? "");
    items.push({ href: unescapeXml(href), collection, size, modified: Number.isNaN(modified) ? 0 : modified });
  }
  return items;
}

function unescapeXml(s) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");
}

/** The key of an href (absolute URL or path), or undefined outside the base. */
function hrefKey(site, href) {
  let path = href.replace(/^https?:\/\/[^/]+/i, "");
  try {
    path = decodeURIComponent(path);
  } catch {
    return undefined;
  }
  return path.startsWith(site.path) ? path.slice(site.path.length) : undefined;
}

const PROPFIND_BODY =
  '<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><prop><resourcetype/><getcontentlength/><getlastmodified/></prop></propfind>';

function listCollection(site, dir, prefix, out) {
  const { status, text } = exchange(site, "PROPFIND", keyPath(site, dir), `PROPFIND ${dir || "/"}`, {
    headers: [["depth", "1"], ["content-type", "application/xml"]],
    text: PROPFIND_BODY,
  });
  if (status === 404) return;
  if (status !== 207) throw statusError(`listing ${dir || "/"}`, status, text);
  for (const item of parseMultistatus(text)) {
    const key = hrefKey(site, item.href);
    if (key === undefined || key === dir || key === dir.replace(/\/$/, "")) continue;
    if (key.startsWith(UPLOADS)) continue;
    if (item.collection) {
      const sub = key.endsWith("/") ? key : `${key}/`;
      // Descend only where keys under the prefix can be.
      if (sub.startsWith(prefix) || prefix.startsWith(sub)) listCollection(site, sub, prefix, out);
    } else if (key.startsWith(prefix)) {
      out.push({ key, size: BigInt(item.size), lastModifiedMs: BigInt(item.modified) });
    }
  }
}

// --- the exported resources ----------------------------------------------

let uploadCounter = 0;

class Upload {
  constructor(site, key) {
    this.site = site;
    this.key = key;
    const random = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
    this.temp = `${UPLOADS}${random}-${++uploadCounter}`;
    makeParents(site, this.temp);
    const { req, body } = request(site, "PUT", keyPath(site, this.temp), [["content-type", "application/octet-stream"]]);
    this.body = body;
    this.stream = body.write();
    // Sent now, streamed as `write` is called: nothing is buffered here.
    this.future = handle(req, undefined);
    this.size = 0n;
  }

  write(chunk) {
    if (!this.stream) throw fail("other", `upload of ${this.key} is already finished`);
    try {
      writeAll(this.stream, chunk);
    } catch (e) {
      if (e?.tag) throw e;
      throw fail("transient", `writing ${this.key} failed: ${JSON.stringify(e?.payload ?? e)}`);
    }
    this.size += BigInt(chunk.length);
  }

  complete() {
    this.stream.blockingFlush();
    this.stream[Symbol.dispose]?.();
    this.stream = undefined;
    OutgoingBody.finish(this.body, undefined);
    const response = awaitResponse(this.future, `PUT ${this.key}`);
    const status = response.status();
    const text = readText(response);
    response[Symbol.dispose]?.();
    if (status !== 201 && status !== 204 && status !== 200) {
      throw statusError(`uploading ${this.key}`, status, text);
    }
    makeParents(this.site, this.key);
    const destination = `${this.site.scheme}://${this.site.authority}${keyPath(this.site, this.key)}`;
    const moved = exchange(this.site, "MOVE", keyPath(this.site, this.temp), `MOVE ${this.key}`, {
      headers: [["destination", destination], ["overwrite", "T"]],
    });
    if (moved.status !== 201 && moved.status !== 204) {
      throw statusError(`moving the upload into place as ${this.key}`, moved.status, moved.text);
    }
    return this.size;
  }

  /** Called when the operator drops the upload: children before parents, or the host traps. */
  [Symbol.dispose]() {
    if (this.stream) {
      this.stream[Symbol.dispose]?.();
      this.stream = undefined;
      this.body[Symbol.dispose]?.();
      this.future[Symbol.dispose]?.();
    }
  }

  abort() {
    if (this.stream) {
      // Dropping the body unfinished makes the host abandon the request.
      this.stream[Symbol.dispose]?.();
      this.stream = undefined;
      this.body[Symbol.dispose]?.();
      this.future[Symbol.dispose]?.();
    }
    const { status, text } = exchange(this.site, "DELETE", keyPath(this.site, this.temp), `DELETE ${this.temp}`);
    if (status >= 300 && status !== 404) throw statusError(`removing the aborted upload ${this.temp}`, status, text);
  }
}

class Download {
  constructor(site, key) {
    const { req, body } = request(site, "GET", keyPath(site, key), [["content-length", "0"]]);
    OutgoingBody.finish(body, undefined);
    const response = awaitResponse(handle(req, undefined), `GET ${key}`);
    const status = response.status();
    if (status !== 200) throw statusError(`reading ${key}`, status, readText(response));
    const length = header(response, "content-length");
    this.length = length === undefined ? undefined : BigInt(length);
    this.response = response;
    this.body = response.consume();
    this.stream = this.body.stream();
    this.key = key;
  }

  size() {
    return this.length;
  }

  /** Called when the operator drops the download, read to the end or not. */
  [Symbol.dispose]() {
    this.stream?.[Symbol.dispose]?.();
    this.stream = undefined;
    this.body?.[Symbol.dispose]?.();
    this.body = undefined;
    this.response?.[Symbol.dispose]?.();
    this.response = undefined;
  }

  read(max) {
    if (!this.stream) return new Uint8Array(0);
    try {
      return this.stream.blockingRead(BigInt(max));
    } catch (e) {
      if (e?.payload?.tag === "closed" || e?.tag === "closed") {
        this.stream[Symbol.dispose]?.();
        this.stream = undefined;
        return new Uint8Array(0);
      }
      throw fail("transient", `reading ${this.key} failed: ${JSON.stringify(e?.payload ?? e)}`);
    }
  }
}

class Backend {
  constructor(site) {
    this.site = site;
  }

  static open(config) {
    const site = parseConfig(config);
    // Cheap and gives clear errors early: is the base collection there?
    const { status, text } = exchange(site, "PROPFIND", site.path, `PROPFIND ${site.path}`, {
      headers: [["depth", "0"], ["content-type", "application/xml"]],
      text: PROPFIND_BODY,
    });
    if (status === 404) {
      throw fail("invalid-config", `\`url\`: the collection ${site.path} does not exist on ${site.authority}; create it first`);
    }
    if (status !== 207) throw statusError(`checking ${site.path}`, status, text);
    log("debug", `webdav: opened ${site.scheme}://${site.authority}${site.path}`);
    return new Backend(site);
  }

  startUpload(key) {
    return new Upload(this.site, key);
  }

  openDownload(key) {
    return new Download(this.site, key);
  }

  listObjects(prefix) {
    const out = [];
    const dir = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/") + 1) : "";
    listCollection(this.site, dir, prefix, out);
    return out;
  }

  delete(key) {
    const { status, text } = exchange(this.site, "DELETE", keyPath(this.site, key), `DELETE ${key}`);
    if (status === 404) throw fail("not-found", `${key} does not exist`);
    if (status >= 300) throw statusError(`deleting ${key}`, status, text);
  }
}

export const storage = { Backend, Upload, Download };
