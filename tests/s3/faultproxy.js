#!/usr/bin/env node
// A fault-injecting HTTP proxy for the S3 integration tests (plain Node.js, no dependencies).
//
//   node tests/s3/faultproxy.js --upstream http://127.0.0.1:PORT [options]
//   node tests/s3/faultproxy.js --validate CONTROL_FILE
//
// It listens on 127.0.0.1 only and forwards every request unchanged to the upstream (method,
// path and query as received, every header byte for byte in its order, Host and
// Authorization included, bodies streamed both ways), so SigV4 signatures stay valid. It
// injects faults chosen by rules, from --fault arguments and from a JSON control file that is
// read again on every request (a test changes the faults between two commands by rewriting it,
// atomically: write a temporary file, then rename).
//
// Options:
//   --upstream URL      http://127.0.0.1:PORT (or localhost, [::1]; loopback only)
//   --port N            listening port; 0 (the default) lets the kernel pick one
//   --port-file FILE    once listening, write the port there (temp file + rename)
//   --control FILE      the control file (missing file: no rules from it)
//   --fault SPEC        a rule: JSON ('{"fault":"slowdown","every":3}') or the short form
//                       KIND[:KEY=VALUE,...] ('slowdown:every=3,match=PUT,times=5'); repeatable;
//                       evaluated before the control file's rules
//   --seed N            seed of the "probability" selections (default 1)
//   --log FILE          append one line per request and one per injected fault
//   --parent-pid PID    exit when process PID is gone
//
// Control file: {"seed": N?, "rules": [RULE, ...]}. A RULE:
//   "fault"        slowdown | error500 | throttle429 | reset | latency | truncate | stall |
//                  requesttimeout | drop                                          (required)
//   "match"        "PUT", "GET|HEAD", "PUT /regex", "/regex" or "*": methods, then an
//                  optional path regex (searched in path+query as sent by the client)
//   "method"       "PUT", "GET|HEAD" or ["GET","HEAD"]   (instead of "match")
//   "path"         regex searched in path+query            (instead of "match")
//   "after"        skip the first N matching requests
//   "every"        fire on every Nth matching request (Nth, 2Nth, ...; counted after "after")
//   "probability"  fire with probability p (0..1), reproducible from the seed
//   "times"        fire at most N times, then the rule is inert (it stops counting too)
//   "always"       true: fire on every match (the default when no selector is given)
//   "ms"           latency: delay before forwarding (default 1000); stall: close the socket
//                  after ms (default: never, the client has to give up)
//   "bytes"        truncate: body bytes passed before the cut (default: half)
//   "retry_after"  throttle429: Retry-After value (default 1)
//   "comment"      ignored
// Rules are evaluated in order. "latency" adds its delay and evaluation goes on; the first
// other rule that fires decides the request's fate, and the rules after it do not see the
// request. A rule's counters start afresh whenever the control file changes.
//
// Faults:
//   slowdown        503 <Code>SlowDown</Code>          (request body read first)
//   error500        500 <Code>InternalError</Code>
//   throttle429     429 <Code>TooManyRequests</Code>, Retry-After: 1
//   requesttimeout  400 <Code>RequestTimeout</Code>
//   reset           read the request, then reset the connection (TCP RST), no response
//   latency         wait "ms", then forward
//   truncate        forward; pass the status line, the headers (Content-Length unchanged)
//                   and only part of the body, then close the connection. A response without
//                   a body (HEAD, 204, 304, length 0) is dropped instead (see drop)
//   stall           read the request and never answer; the socket stays open
//   drop            forward (the upstream carries the request out), then close the client's
//                   connection without a response: the ambiguous "did my PUT land?" case
// Every injected response carries the header x-faultproxy-fault: KIND.
//
// Admin endpoints (never forwarded): GET /__faultproxy/stats (JSON counters),
// POST /__faultproxy/reset (zero the counters), GET /__faultproxy/health.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

const PROG = 'faultproxy.js';
const ADMIN_PREFIX = '/__faultproxy';
const FAULT_KINDS = [
  'slowdown',
  'error500',
  'throttle429',
  'reset',
  'latency',
  'truncate',
  'stall',
  'requesttimeout',
  'drop',
];
const RULE_KEYS = new Set([
  'fault',
  'match',
  'method',
  'path',
  'after',
  'every',
  'probability',
  'times',
  'always',
  'ms',
  'bytes',
  'retry_after',
  'comment',
]);
const ERROR_FAULTS = {
  slowdown: [503, 'SlowDown', 'Please reduce your request rate.'],
  error500: [500, 'InternalError', 'We encountered an internal error. Please try again.'],
  throttle429: [429, 'TooManyRequests', 'Please reduce your request rate.'],
  requesttimeout: [
    400,
    'RequestTimeout',
    'Your socket connection to the server was not read from or written to within the ' +
      'timeout period. Idle connections will be closed.',
  ],
};

function die(msg, code = 2) {
  process.stderr.write(`${PROG}: error: ${msg}\n`);
  process.exit(code);
}

// ---------------------------------------------------------------- rules

class RuleError extends Error {}

function isInt(v, min) {
  return Number.isInteger(v) && v >= min;
}

function parseMethods(v, where) {
  const list = Array.isArray(v) ? v : String(v).split(/[|,]/);
  const methods = new Set();
  for (const m of list) {
    if (typeof m !== 'string' || !/^[A-Z]+$/.test(m.trim())) {
      throw new RuleError(`${where}: bad method '${m}' (upper case, e.g. "PUT")`);
    }
    methods.add(m.trim());
  }
  return methods;
}

function parseRegex(v, where) {
  if (typeof v !== 'string' || v === '') throw new RuleError(`${where}: path must be a regex`);
  try {
    return new RegExp(v);
  } catch (err) {
    throw new RuleError(`${where}: bad path regex '${v}': ${err.message}`);
  }
}

// Validate a rule as written by a test; returns its normalised form.
function normalizeRule(raw, where) {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new RuleError(`${where}: a rule must be a JSON object`);
  }
  for (const key of Object.keys(raw)) {
    if (!RULE_KEYS.has(key)) {
      throw new RuleError(`${where}: unknown key '${key}' (known: ${[...RULE_KEYS].join(', ')})`);
    }
  }
  if (!FAULT_KINDS.includes(raw.fault)) {
    throw new RuleError(`${where}: "fault" must be one of ${FAULT_KINDS.join(', ')}`);
  }
  const rule = {
    fault: raw.fault,
    methods: null,
    pathRe: null,
    after: 0,
    every: null,
    probability: null,
    times: null,
    ms: null,
    bytes: null,
    retryAfter: '1',
    text: JSON.stringify(raw),
  };
  if ('match' in raw) {
    if ('method' in raw || 'path' in raw) {
      throw new RuleError(`${where}: use "match", or "method"/"path", not both`);
    }
    if (typeof raw.match !== 'string') throw new RuleError(`${where}: "match" must be a string`);
    const m = raw.match.trim();
    let mm;
    if (m === '*' || m === '') {
      // any request
    } else if ((mm = /^([A-Z]+(?:[|,][A-Z]+)*)(?:\s+(\S.*))?$/.exec(m))) {
      rule.methods = parseMethods(mm[1], where);
      if (mm[2] !== undefined) rule.pathRe = parseRegex(mm[2], where);
    } else {
      rule.pathRe = parseRegex(m, where);
    }
  }
  if ('method' in raw) rule.methods = parseMethods(raw.method, where);
  if ('path' in raw) rule.pathRe = parseRegex(raw.path, where);
  if ('after' in raw) {
    if (!isInt(raw.after, 0)) throw new RuleError(`${where}: "after" must be an integer >= 0`);
    rule.after = raw.after;
  }
  if ('every' in raw) {
    if (!isInt(raw.every, 1)) throw new RuleError(`${where}: "every" must be an integer >= 1`);
    rule.every = raw.every;
  }
  if ('probability' in raw) {
    const p = raw.probability;
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
      throw new RuleError(`${where}: "probability" must be a number in [0, 1]`);
    }
    rule.probability = p;
  }
  if ('times' in raw) {
    if (!isInt(raw.times, 0)) throw new RuleError(`${where}: "times" must be an integer >= 0`);
    rule.times = raw.times;
  }
  if ('always' in raw) {
    if (raw.always !== true) throw new RuleError(`${where}: "always" can only be true`);
    if (rule.every !== null || rule.probability !== null) {
      throw new RuleError(`${where}: "always" excludes "every" and "probability"`);
    }
  }
  if ('ms' in raw) {
    if (!isInt(raw.ms, 0)) throw new RuleError(`${where}: "ms" must be an integer >= 0`);
    if (raw.fault !== 'latency' && raw.fault !== 'stall') {
      throw new RuleError(`${where}: "ms" applies to latency and stall only`);
    }
    rule.ms = raw.ms;
  }
  if (raw.fault === 'latency' && rule.ms === null) rule.ms = 1000;
  if ('bytes' in raw) {
    if (!isInt(raw.bytes, 0)) throw new RuleError(`${where}: "bytes" must be an integer >= 0`);
    if (raw.fault !== 'truncate') throw new RuleError(`${where}: "bytes" applies to truncate only`);
    rule.bytes = raw.bytes;
  }
  if ('retry_after' in raw) {
    if (raw.fault !== 'throttle429') {
      throw new RuleError(`${where}: "retry_after" applies to throttle429 only`);
    }
    if (!isInt(raw.retry_after, 0)) {
      throw new RuleError(`${where}: "retry_after" must be an integer >= 0 (seconds)`);
    }
    rule.retryAfter = String(raw.retry_after);
  }
  return rule;
}

// --fault SPEC: JSON, or KIND[:KEY=VALUE,...] with numbers and true parsed.
function parseFaultSpec(spec) {
  const text = spec.trim();
  if (text.startsWith('{')) {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new RuleError(`--fault '${spec}': bad JSON: ${err.message}`);
    }
  }
  const [kind, rest] = text.split(/:(.*)/s);
  const raw = { fault: kind };
  if (rest) {
    for (const item of rest.split(',')) {
      const eq = item.indexOf('=');
      if (eq <= 0) throw new RuleError(`--fault '${spec}': expected KEY=VALUE, got '${item}'`);
      const key = item.slice(0, eq).trim();
      const val = item.slice(eq + 1);
      if (/^-?\d+(\.\d+)?$/.test(val)) raw[key] = Number(val);
      else if (val === 'true') raw[key] = true;
      else raw[key] = val;
    }
  }
  return raw;
}

function parseControl(text, where) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new RuleError(`${where}: not JSON: ${err.message}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new RuleError(`${where}: the document must be an object {"rules": [...]}`);
  }
  for (const key of Object.keys(doc)) {
    if (!['rules', 'seed', 'comment'].includes(key)) {
      throw new RuleError(`${where}: unknown top-level key '${key}' (known: rules, seed, comment)`);
    }
  }
  const rules = doc.rules === undefined ? [] : doc.rules;
  if (!Array.isArray(rules)) throw new RuleError(`${where}: "rules" must be an array`);
  if ('seed' in doc && !Number.isInteger(doc.seed)) {
    throw new RuleError(`${where}: "seed" must be an integer`);
  }
  return {
    seed: doc.seed,
    rules: rules.map((r, i) => normalizeRule(r, `${where}: rules[${i}]`)),
  };
}

// mulberry32, seeded from (seed, source, index): each rule has its own sequence
function makeRng(seed, salt) {
  let h = (seed >>> 0) ^ 0x9e3779b9;
  for (const ch of salt) h = Math.imul(h ^ ch.charCodeAt(0), 0x85ebca6b) >>> 0;
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function attachState(rules, seed, source) {
  return rules.map((rule, index) => ({
    ...rule,
    source,
    index,
    matched: 0,
    fired: 0,
    rng: makeRng(seed, `${source}:${index}`),
  }));
}

function ruleMatches(rule, req) {
  if (rule.times !== null && rule.fired >= rule.times) return false; // inert
  if (rule.methods && !rule.methods.has(req.method)) return false;
  if (rule.pathRe && !rule.pathRe.test(req.url)) return false;
  return true;
}

function ruleFires(rule) {
  rule.matched++;
  const k = rule.matched - rule.after;
  if (k <= 0) return false;
  if (rule.every !== null && k % rule.every !== 0) return false;
  if (rule.probability !== null && !(rule.rng() < rule.probability)) return false;
  rule.fired++;
  return true;
}

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const opts = {
    upstream: undefined,
    port: 0,
    portFile: undefined,
    control: undefined,
    faults: [],
    seed: 1,
    log: undefined,
    parentPid: undefined,
    validate: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) die(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--upstream':
        opts.upstream = value();
        break;
      case '--port': {
        const v = value();
        if (!/^\d+$/.test(v) || Number(v) > 65535) die(`bad --port '${v}'`);
        opts.port = Number(v);
        break;
      }
      case '--port-file':
        opts.portFile = value();
        break;
      case '--control':
        opts.control = value();
        break;
      case '--fault':
        opts.faults.push(value());
        break;
      case '--seed': {
        const v = value();
        if (!/^-?\d+$/.test(v)) die(`bad --seed '${v}'`);
        opts.seed = Number(v);
        break;
      }
      case '--log':
        opts.log = value();
        break;
      case '--parent-pid': {
        const v = value();
        if (!/^[1-9]\d*$/.test(v)) die(`bad --parent-pid '${v}'`);
        opts.parentPid = Number(v);
        break;
      }
      case '--validate':
        opts.validate = value();
        break;
      case '-h':
      case '--help':
        process.stdout.write(
          'usage: node faultproxy.js --upstream http://127.0.0.1:PORT [--port N] ' +
            '[--port-file FILE] [--control FILE] [--fault SPEC]... [--seed N] [--log FILE] ' +
            '[--parent-pid PID]\n       node faultproxy.js --validate CONTROL_FILE\n' +
            '(the rules are described at the top of this file)\n',
        );
        process.exit(0);
        break;
      default:
        die(`unknown argument '${arg}' (see --help)`);
    }
  }
  return opts;
}

// ---------------------------------------------------------------- the proxy

function main() {
  const opts = parseArgs(process.argv.slice(2));

  if (opts.validate !== undefined) {
    try {
      const parsed = parseControl(fs.readFileSync(opts.validate, 'utf8'), opts.validate);
      process.stdout.write(`${opts.validate}: ${parsed.rules.length} rule(s), valid\n`);
      process.exit(0);
    } catch (err) {
      die(err.message, 1);
    }
  }

  if (!opts.upstream) die('--upstream http://127.0.0.1:PORT is required');
  let upstream;
  try {
    upstream = new URL(opts.upstream);
  } catch (err) {
    die(`bad --upstream '${opts.upstream}'`);
  }
  const upHost = upstream.hostname.replace(/^\[|\]$/g, '');
  if (upstream.protocol !== 'http:' || !/^(127\.\d+\.\d+\.\d+|localhost|::1)$/.test(upHost)) {
    die(`--upstream must be http:// on a loopback address, not '${opts.upstream}'`);
  }
  if (!upstream.port) die('--upstream needs an explicit port');
  if (upstream.pathname !== '/' || upstream.search) die('--upstream must have no path');

  let cliRules;
  try {
    cliRules = attachState(
      opts.faults.map((spec, i) => normalizeRule(parseFaultSpec(spec), `--fault #${i + 1}`)),
      opts.seed,
      'cli',
    );
  } catch (err) {
    die(err.message);
  }

  let logFd = null;
  if (opts.log) logFd = fs.openSync(opts.log, 'a');
  const log = (msg) => {
    if (logFd === null) return;
    try {
      fs.writeSync(logFd, `${new Date().toISOString()} ${msg}\n`);
    } catch (err) {
      // a full disk must not take the proxy down
    }
  };

  // ---- statistics
  const newStats = () => ({
    requests: 0,
    forwarded: 0,
    faults_total: 0,
    faults: Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])),
    responses: {},
    by_method: {},
    upstream_errors: 0,
    client_aborts: 0,
    control_errors: 0,
  });
  let stats = newStats();

  // ---- control file, read again on every request
  const control = {
    key: null, // what the current generation was read from
    generation: 0,
    rules: [],
    error: null,
  };
  const loadControl = () => {
    if (!opts.control) return control;
    let text;
    let st;
    try {
      // stat and read the same file, even when it is being replaced
      const fd = fs.openSync(opts.control, 'r');
      try {
        st = fs.fstatSync(fd);
        text = fs.readFileSync(fd, 'utf8');
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      if (err.code !== 'ENOENT') throw err;
      if (control.key !== 'missing') {
        control.key = 'missing';
        control.generation++;
        control.rules = [];
        control.error = null;
        log(`control ${opts.control}: missing, no rules (generation ${control.generation})`);
      }
      return control;
    }
    const key = `${st.ino}:${st.mtimeMs}:${st.size}:${text}`;
    if (key === control.key) return control;
    control.key = key;
    control.generation++;
    try {
      const parsed = parseControl(text, opts.control);
      control.rules = attachState(
        parsed.rules,
        parsed.seed === undefined ? opts.seed : parsed.seed,
        'control',
      );
      control.error = null;
      log(
        `control ${opts.control}: generation ${control.generation}, ` +
          `${control.rules.length} rule(s): ${control.rules.map((r) => r.text).join(' ')}`,
      );
    } catch (err) {
      control.rules = [];
      control.error = err.message;
      log(`control ERROR ${err.message}`);
    }
    return control;
  };

  const statsDoc = () => ({
    ...stats,
    rules: [...cliRules, ...control.rules].map((r) => ({
      source: r.source,
      index: r.index,
      fault: r.fault,
      rule: JSON.parse(r.text),
      matched: r.matched,
      fired: r.fired,
    })),
    control: {
      file: opts.control || null,
      generation: control.generation,
      error: control.error,
    },
    upstream: opts.upstream,
  });

  // ---- helpers
  const sockets = new Set();
  let seq = 0;

  const countResponse = (code) => {
    stats.responses[code] = (stats.responses[code] || 0) + 1;
  };

  const drain = (req) =>
    new Promise((resolve) => {
      if (req.complete || req.destroyed) return resolve();
      req.on('end', resolve);
      req.on('close', resolve);
      req.on('error', resolve);
      req.resume();
    });

  const xmlEscape = (s) =>
    s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

  const sendXmlError = (req, res, status, code, message, extra = {}) => {
    const requestId = `FAULTPROXY${String(seq).padStart(8, '0')}`;
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message>` +
      `<Resource>${xmlEscape(req.url.split('?')[0])}</Resource>` +
      `<RequestId>${requestId}</RequestId></Error>`;
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, {
      'Content-Type': 'application/xml',
      'Content-Length': Buffer.byteLength(body),
      'x-amz-request-id': requestId,
      ...extra,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  // Forward req to the upstream. mode: undefined | {truncate: bytes|null} | {drop: true}.
  const forward = (req, res, id, done, mode = {}) => {
    stats.forwarded++;
    let upRes = null;
    const up = http.request({
      host: upHost,
      port: Number(upstream.port),
      method: req.method,
      path: req.url,
      headers: req.rawHeaders, // as received: order, case, duplicates
      setHost: false,
      agent: false, // one upstream connection a request: no stale keep-alive races
    });
    const abortUpstream = () => {
      if (!up.destroyed) up.destroy();
      if (upRes && !upRes.destroyed) upRes.destroy();
    };
    res.on('close', () => {
      if (!res.writableFinished) {
        if (!mode.drop && !mode.truncate && !res.pvbCut) {
          stats.client_aborts++;
          done('client aborted');
        }
        abortUpstream();
      }
    });
    req.on('aborted', () => abortUpstream());
    up.on('error', (err) => {
      if (res.pvbCut || res.destroyed) return;
      stats.upstream_errors++;
      log(`#${id} upstream error: ${err.code || err.message}`);
      if (!res.headersSent) {
        countResponse(502);
        sendXmlError(req, res, 502, 'FaultProxyUpstreamError', `upstream: ${err.message}`);
        done('502 upstream error');
      } else {
        res.destroy();
        done('upstream error mid-response');
      }
    });
    up.on('response', (ur) => {
      upRes = ur;
      const status = ur.statusCode;
      // hop-by-hop: this connection's persistence is the proxy's business
      const raw = [];
      for (let i = 0; i < ur.rawHeaders.length; i += 2) {
        const name = ur.rawHeaders[i].toLowerCase();
        if (name === 'connection' || name === 'keep-alive') continue;
        raw.push(ur.rawHeaders[i], ur.rawHeaders[i + 1]);
      }
      const lenHeader = ur.headers['content-length'];
      const len = lenHeader !== undefined ? Number(lenHeader) : null;
      const noBody =
        req.method === 'HEAD' || status === 204 || status === 304 || len === 0;

      if (mode.drop || (mode.truncate && noBody)) {
        res.pvbCut = true;
        ur.resume();
        ur.on('end', () => {
          res.destroy();
          done(`dropped (upstream said ${status})`);
        });
        ur.on('error', () => res.destroy());
        return;
      }
      res.sendDate = false;
      res.writeHead(status, ur.statusMessage, raw);
      if (!mode.truncate) {
        countResponse(status);
        ur.pipe(res);
        ur.on('end', () => done(String(status)));
        ur.on('error', () => res.destroy());
        return;
      }
      // truncate: a part of the body, then close
      let limit;
      if (len !== null) {
        limit = mode.truncate.bytes !== null ? Math.min(mode.truncate.bytes, len - 1) : Math.floor(len / 2);
      } else {
        limit = mode.truncate.bytes !== null ? mode.truncate.bytes : 0;
      }
      res.pvbCut = true;
      let sent = 0;
      const cut = () => {
        ur.destroy();
        done(`${status} truncated after ${sent} of ${len === null ? '?' : len} body bytes`);
        res.destroy();
      };
      if (limit <= 0) {
        res.flushHeaders();
        setTimeout(cut, 50);
        return;
      }
      ur.on('data', (chunk) => {
        if (sent >= limit) return;
        const part = chunk.subarray(0, limit - sent);
        sent += part.length;
        if (sent >= limit) {
          ur.pause();
          res.write(part, () => setTimeout(cut, 20));
        } else {
          res.write(part);
        }
      });
      ur.on('end', () => {
        // a chunked body shorter than the limit: cut before the final chunk anyway
        if (sent < limit) setTimeout(cut, 20);
      });
    });
    req.pipe(up);
  };

  // ---- admin endpoints
  const admin = (req, res) => {
    const url = req.url.split('?')[0];
    const json = (code, doc) => {
      const body = JSON.stringify(doc, null, 1) + '\n';
      res.writeHead(code, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(body);
    };
    drain(req).then(() => {
      if (url === `${ADMIN_PREFIX}/stats` && req.method === 'GET') {
        loadControl();
        return json(200, statsDoc());
      }
      if (url === `${ADMIN_PREFIX}/health` && req.method === 'GET') return json(200, { ok: true });
      if (url === `${ADMIN_PREFIX}/reset` && req.method === 'POST') {
        stats = newStats();
        for (const r of cliRules) {
          r.matched = 0;
          r.fired = 0;
          r.rng = makeRng(opts.seed, `cli:${r.index}`);
        }
        control.key = null; // read the control file afresh: new counters
        loadControl();
        log('admin: counters reset');
        return json(200, { ok: true });
      }
      return json(404, { error: `unknown admin request ${req.method} ${url}` });
    });
  };

  // ---- requests
  const server = http.createServer();
  server.requestTimeout = 0; // never answer 408 on our own: stall must stall
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (err, socket) => {
    log(`client error: ${err.code || err.message}`);
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  server.on('request', async (req, res) => {
    if (req.url === ADMIN_PREFIX || req.url.startsWith(`${ADMIN_PREFIX}/`)) return admin(req, res);
    const id = ++seq;
    const t0 = Date.now();
    stats.requests++;
    stats.by_method[req.method] = (stats.by_method[req.method] || 0) + 1;
    const what = `#${id} ${req.method} ${req.url}`;
    let finished = false;
    const done = (outcome) => {
      if (finished) return;
      finished = true;
      log(`${what} -> ${outcome} (${Date.now() - t0}ms)`);
    };
    req.on('error', () => {});
    res.on('error', () => {});

    let ctl;
    try {
      ctl = loadControl();
    } catch (err) {
      ctl = { error: `cannot read ${opts.control}: ${err.message}`, rules: [] };
    }
    if (ctl.error) {
      // a broken control file must fail the test loudly, not run it without faults
      stats.control_errors++;
      await drain(req);
      countResponse(500);
      sendXmlError(req, res, 500, 'FaultProxyControlError', ctl.error);
      done('500 control file error');
      return;
    }

    let delay = 0;
    let fault = null;
    for (const rule of [...cliRules, ...ctl.rules]) {
      if (!ruleMatches(rule, req) || !ruleFires(rule)) continue;
      stats.faults[rule.fault]++;
      stats.faults_total++;
      log(`${what} FAULT ${rule.fault} (${rule.source} rule ${rule.index}, fired ${rule.fired})`);
      if (rule.fault === 'latency') {
        delay += rule.ms;
        continue;
      }
      fault = rule;
      break;
    }
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    if (res.destroyed) {
      done('client gone during latency');
      return;
    }
    const kind = fault ? fault.fault : null;
    if (kind) res.setHeader('x-faultproxy-fault', kind);

    switch (kind) {
      case null:
        forward(req, res, id, done);
        return;
      case 'slowdown':
      case 'error500':
      case 'throttle429':
      case 'requesttimeout': {
        const [status, code, message] = ERROR_FAULTS[kind];
        await drain(req);
        countResponse(status);
        sendXmlError(
          req,
          res,
          status,
          code,
          message,
          kind === 'throttle429' ? { 'Retry-After': fault.retryAfter } : {},
        );
        done(`${status} ${code}`);
        return;
      }
      case 'reset':
        await drain(req);
        if (typeof req.socket.resetAndDestroy === 'function') req.socket.resetAndDestroy();
        else req.socket.destroy();
        done('connection reset');
        return;
      case 'stall': {
        drain(req);
        const socket = req.socket;
        let timer = null;
        let timedOut = false;
        if (fault.ms !== null) {
          timer = setTimeout(() => {
            timedOut = true;
            socket.destroy();
          }, fault.ms);
        }
        socket.on('close', () => {
          if (timer) clearTimeout(timer);
          done(timedOut ? `stalled, closed by the proxy after ${fault.ms}ms` : 'stalled until the client gave up');
        });
        return;
      }
      case 'truncate':
        forward(req, res, id, done, { truncate: { bytes: fault.bytes } });
        return;
      case 'drop':
        forward(req, res, id, done, { drop: true });
        return;
      default:
        throw new Error(`unhandled fault ${kind}`);
    }
  });

  // ---- life cycle
  let stopping = false;
  const stop = (why) => {
    if (stopping) return;
    stopping = true;
    log(`stopping (${why})`);
    server.close();
    for (const s of sockets) s.destroy();
    setTimeout(() => process.exit(0), 100).unref();
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => stop(sig));
  if (opts.parentPid) {
    setInterval(() => {
      try {
        process.kill(opts.parentPid, 0);
      } catch (err) {
        if (err.code === 'ESRCH') stop(`parent ${opts.parentPid} is gone`);
      }
    }, 500).unref();
  }
  process.on('uncaughtException', (err) => {
    log(`internal error: ${err.stack || err}`);
    process.stderr.write(`${PROG}: internal error: ${err.stack || err}\n`);
    process.exit(70);
  });

  server.on('error', (err) => die(`cannot listen: ${err.message}`));
  server.listen(opts.port, '127.0.0.1', () => {
    const port = server.address().port;
    if (opts.portFile) {
      const tmp = `${opts.portFile}.tmp.${process.pid}`;
      fs.writeFileSync(tmp, `${port}\n`);
      fs.renameSync(tmp, opts.portFile);
    }
    loadControl();
    log(
      `listening on http://127.0.0.1:${port} upstream=${opts.upstream} ` +
        `control=${opts.control || '-'} cli-rules=${cliRules.length} seed=${opts.seed}`,
    );
  });
}

main();
