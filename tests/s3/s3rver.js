#!/usr/bin/env node
// Launcher for the S3 server of the integration tests: @20minutes/s3rver (pinned in
// package-lock.json, installed by tests/s3/install.sh) on 127.0.0.1 only.
//
//   NODE_OPTIONS=--openssl-legacy-provider node tests/s3/s3rver.js --dir DIR [options]
//
// Options:
//   --port N                        TCP port; 0 (the default) lets the kernel pick a free one
//   --dir DIR                       data directory (created when missing; the tests pass a
//                                   fresh one; objects already in it are served)
//   --bucket NAME                   create bucket NAME at start (repeatable)
//   --allow-mismatched-signatures   accept well-formed requests whose SigV4 signature is wrong
//   --port-file FILE                once listening, write the port there (temp file + rename)
//   --log FILE                      append s3rver's log (one line per request) to FILE
//   --verbose                       log to standard output (without --log)
//   --parent-pid PID                exit when process PID is gone (a test killed with
//                                   SIGKILL cannot run its cleanup)
//
// Environment contract: NODE_OPTIONS must contain --openssl-legacy-provider. s3rver 4.0.4
// encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has in its
// legacy provider; without it every truncated listing fails with a 500. The launcher checks
// this at start and exits 2 instead of serving broken listings.
//
// Built-in credentials: access key S3RVER, secret S3RVER (SigV4 is verified: a wrong secret
// gets 403 SignatureDoesNotMatch). The server stops cleanly on SIGTERM, SIGINT and SIGHUP.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const PROG = 's3rver.js';
// what s3rver's request logger leaves after cutting 16 characters: "<path> 200 3ms 11b",
// "9ms 315b", "<path> 403 1ms -"
const KOA_LOGGER_LINE = /(^|\s)\d+(\.\d+)?m?s\s+(-|[\d.]+[kmgt]?b)?$/;

function die(msg, code = 2) {
  process.stderr.write(`${PROG}: error: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = {
    port: 0,
    dir: undefined,
    buckets: [],
    allowMismatchedSignatures: false,
    portFile: undefined,
    log: undefined,
    verbose: false,
    parentPid: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) die(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--port': {
        const v = value();
        if (!/^\d+$/.test(v) || Number(v) > 65535) die(`bad --port '${v}'`);
        opts.port = Number(v);
        break;
      }
      case '--dir':
        opts.dir = value();
        break;
      case '--bucket': {
        const v = value();
        // S3's rules, minus the IP-address form
        if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(v)) die(`bad bucket name '${v}'`);
        if (!opts.buckets.includes(v)) opts.buckets.push(v);
        break;
      }
      case '--allow-mismatched-signatures':
        opts.allowMismatchedSignatures = true;
        break;
      case '--port-file':
        opts.portFile = value();
        break;
      case '--log':
        opts.log = value();
        break;
      case '--verbose':
        opts.verbose = true;
        break;
      case '--parent-pid': {
        const v = value();
        if (!/^[1-9]\d*$/.test(v)) die(`bad --parent-pid '${v}'`);
        opts.parentPid = Number(v);
        break;
      }
      case '-h':
      case '--help':
        process.stdout.write(
          'usage: node s3rver.js --dir DIR [--port N] [--bucket NAME]... ' +
            '[--allow-mismatched-signatures] [--port-file FILE] [--log FILE] [--verbose] ' +
            '[--parent-pid PID]\n',
        );
        process.exit(0);
        break;
      default:
        die(`unknown argument '${arg}' (see --help)`);
    }
  }
  if (!opts.dir) die('--dir DIR is required');
  return opts;
}

// s3rver's ListObjectsV2 continuation tokens use DES (see the header comment).
function checkLegacyProvider() {
  try {
    crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8));
  } catch (err) {
    die(
      'DES is not available (' +
        err.message +
        '): start node with NODE_OPTIONS=--openssl-legacy-provider',
    );
  }
}

function loadS3rver() {
  try {
    return require('@20minutes/s3rver');
  } catch (err) {
    die(
      `cannot load @20minutes/s3rver (${err.code || err.message}): ` +
        `run ${path.join(__dirname, 'install.sh')} first`,
    );
  }
}

// s3rver 4.0.4 streams a PUT body straight into the object's file, so a client killed in
// the middle of a PUT leaves a torn object under the key: real S3 (and MinIO, Ceph RGW...)
// never publish a partial object, and pvbackup's format relies on that: it is what makes a
// snapshot appear whole or not at all after kill -9. Make this server atomic the same way
// (body into a temporary file, then rename) so that the kill tests test pvbackup, not this
// server's shortcut. Temporary names lack the object suffix, so listings never show them.
function makePutsAtomic() {
  let FilesystemStore;
  try {
    FilesystemStore = require('@20minutes/s3rver/lib/stores/filesystem');
  } catch (err) {
    die(`cannot load s3rver's filesystem store (${err.code || err.message})`);
  }
  const putContent = FilesystemStore.prototype.putContent;
  if (typeof putContent !== 'function') die("s3rver's store has no putContent: version changed?");
  FilesystemStore.prototype.putContent = async function atomicPutContent(objectPath, content) {
    const tmp = `${objectPath}.pvbtmp-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
    try {
      const result = await putContent.call(this, tmp, content);
      await fs.promises.rename(tmp, objectPath);
      return result;
    } catch (err) {
      await fs.promises.rm(tmp, { force: true });
      throw err;
    }
  };
}

function writeFileAtomic(file, text) {
  const tmp = `${file}.tmp.${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  checkLegacyProvider();
  const S3rver = loadS3rver();
  makePutsAtomic();
  fs.mkdirSync(opts.dir, { recursive: true });

  let logStream;
  let logFd = null;
  const note = (msg) => {
    const line = `${new Date().toISOString()} ${PROG}[${process.pid}]: ${msg}\n`;
    if (logFd !== null) {
      try {
        fs.writeSync(logFd, line);
      } catch (err) {
        // a full disk must not stop the server
      }
    } else if (opts.verbose) process.stdout.write(line);
  };
  if (opts.log) {
    logFd = fs.openSync(opts.log, 'a');
    logStream = fs.createWriteStream(opts.log, { flags: 'a' });
  }

  const server = new S3rver({
    address: '127.0.0.1',
    port: opts.port,
    directory: path.resolve(opts.dir),
    silent: !(opts.verbose && !opts.log),
    configureBuckets: opts.buckets.map((name) => ({ name })),
    allowMismatchedSignatures: opts.allowMismatchedSignatures,
  });
  if (logStream) {
    // s3rver's winston logger: one more transport, without colours, into the file
    const s3rverDir = path.dirname(require.resolve('@20minutes/s3rver/package.json'));
    const winston = require(require.resolve('winston', { paths: [s3rverDir] }));
    server.logger.add(
      new winston.transports.Stream({
        stream: logStream,
        level: 'debug',
        format: winston.format.combine(
          // drop koa-logger's lines (mangled without colours); the launcher logs requests
          winston.format((i) => (KOA_LOGGER_LINE.test(String(i.message)) ? false : i))(),
          winston.format.splat(),
          winston.format.timestamp(),
          winston.format.printf((i) => `${i.timestamp} ${i.level}: ${i.message}`),
        ),
      }),
    );
    // Koa prints errors other than 4xx to stderr unless silent; keep them in the log too
    server.silent = true;
    server.on('error', (err) => {
      if (err.status && err.status < 500) return;
      note(`request error: ${err.stack || err}`);
    });
  }

  let stopping = false;
  const stop = (why) => {
    if (stopping) return;
    stopping = true;
    note(`stopping (${why})`);
    const finish = () => {
      note('stopped');
      process.exit(0);
    };
    // requests in flight get a moment, keep-alive and stalled clients none
    setTimeout(finish, 1000);
    if (server.httpServer) {
      server.httpServer.close(finish);
      server.httpServer.closeIdleConnections();
      setTimeout(() => server.httpServer.closeAllConnections(), 300).unref();
    } else {
      finish();
    }
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

  let address;
  try {
    address = await server.run();
  } catch (err) {
    die(`cannot start: ${err.message}`);
  }
  if (logStream) {
    server.httpServer.on('request', (req, res) => {
      const t0 = Date.now();
      let done = false;
      const line = (how) => {
        if (done) return;
        done = true;
        note(`${req.method} ${req.url} -> ${how} (${Date.now() - t0}ms)`);
      };
      res.on('finish', () => line(String(res.statusCode)));
      res.on('close', () => line(`${res.statusCode} aborted`));
    });
  }
  if (opts.portFile) writeFileAtomic(opts.portFile, `${address.port}\n`);
  note(
    `listening on http://${address.address}:${address.port} dir=${path.resolve(opts.dir)} ` +
      `buckets=${opts.buckets.join(',') || '-'}` +
      (opts.allowMismatchedSignatures ? ' allow-mismatched-signatures' : ''),
  );
  if (!opts.log && !opts.verbose) {
    process.stdout.write(`s3rver listening on http://${address.address}:${address.port}\n`);
  }
}

main().catch((err) => die(err.stack || String(err)));
