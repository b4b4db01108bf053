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
//   --key ACCESS_KEY:SECRET         one more key pair of the built-in account (repeatable):
//                                   credential rotation tests need two valid ones
//   --revoked-keys-file FILE        before each request, access key ids listed in FILE (one a
//                                   line; the file may appear at any time) stop being valid
//
// Environment contract: NODE_OPTIONS must contain --openssl-legacy-provider. s3rver 4.0.4
// encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only has in its
// legacy provider; without it every truncated listing fails with a 500. The launcher checks
// this at start and exits 2 instead of serving broken listings.
//
// Built-in credentials: access key S3RVER, secret S3RVER (SigV4 is verified: a wrong secret
// gets 403 SignatureDoesNotMatch). The server stops cleanly on SIGTERM, SIGINT and SIGHUP.
//
// Added to s3rver (which answers ListMultipartUploads with 501 and AbortMultipartUpload with
// 405), as AWS documents them, behind s3rver's own SigV4 check:
//   GET /BUCKET?uploads[&prefix=P][&key-marker=K[&upload-id-marker=U]][&max-uploads=N]
//       ListMultipartUploadsResult of the uploads initiated and neither completed nor
//       aborted, in key then upload-id order (AWS orders the uploads of one key by their
//       initiation time instead), at most N (1 to 1000, default 1000) a page; delimiter and
//       encoding-type answer 501 NotImplemented. Initiated is the time of the initiate request,
//       kept in pvb-initiated.json in the upload's directory (BUCKET/._S3rver_uploads/ID/).
//   DELETE /BUCKET/KEY?uploadId=ID
//       AbortMultipartUpload: the upload and its parts are removed, 204.
// An unknown, aborted or completed upload id (or one of another key) gets 404 NoSuchUpload
// from abort, UploadPart and CompleteMultipartUpload. Unlike s3rver's own operations, these
// two refuse anonymous requests (403 AccessDenied).
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
    keys: [],
    revokedKeysFile: undefined,
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
      case '--key': {
        const v = value();
        const m = /^([A-Za-z0-9]{4,64}):([^\s:]{4,128})$/.exec(v);
        if (!m) die(`bad --key '${v.split(':')[0]}:...' (ACCESS_KEY:SECRET)`);
        opts.keys.push([m[1], m[2]]);
        break;
      }
      case '--revoked-keys-file':
        opts.revokedKeysFile = value();
        break;
      case '-h':
      case '--help':
        process.stdout.write(
          'usage: node s3rver.js --dir DIR [--port N] [--bucket NAME]... ' +
            '[--allow-mismatched-signatures] [--port-file FILE] [--log FILE] [--verbose] ' +
            '[--parent-pid PID] [--key ACCESS_KEY:SECRET]... [--revoked-keys-file FILE]\n',
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

// require() a module of s3rver's package, or die with the way to install it.
function requireS3rver(name) {
  try {
    return require(name);
  } catch (err) {
    die(
      `cannot load ${name} (${err.code || err.message}): ` +
        `run ${path.join(__dirname, 'install.sh')} first`,
    );
  }
  return undefined;
}

function loadS3rver() {
  return requireS3rver('@20minutes/s3rver');
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

// ---- multipart uploads: ListMultipartUploads and AbortMultipartUpload (see the header) ----

const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/; // s3rver makes 32 hex digits; never '.' or '/'
const INITIATED_FILE = 'pvb-initiated.json';
const MAX_UPLOADS = 1000;

// Byte order of the UTF-8 encodings, as S3 sorts keys (JS compares UTF-16 code units).
function compareBytes(a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function addMultipartUploads() {
  const FilesystemStore = requireS3rver('@20minutes/s3rver/lib/stores/filesystem');
  const S3Error = requireS3rver('@20minutes/s3rver/lib/models/error');
  const { DUMMY_ACCOUNT } = requireS3rver('@20minutes/s3rver/lib/models/account');
  const bucketCtrl = requireS3rver('@20minutes/s3rver/lib/controllers/bucket');
  const authentication = requireS3rver('@20minutes/s3rver/lib/middleware/authentication');
  const authPath = require.resolve('@20minutes/s3rver/lib/middleware/authentication');
  if (require.cache[require.resolve('@20minutes/s3rver/lib/routes')]) {
    die("s3rver's routes were loaded before the multipart additions could hook in");
  }
  if (typeof FilesystemStore.prototype.initiateUpload !== 'function') {
    die("s3rver's store has no initiateUpload: version changed?");
  }

  const uploadsDir = (store, bucket) => store.getResourcePath(bucket, undefined, 'uploads');
  const noSuchUpload = (uploadId) =>
    new S3Error(
      'NoSuchUpload',
      'The specified upload does not exist. The upload ID may be invalid, or the upload ' +
        'may have been aborted or completed.',
      { UploadId: String(uploadId) },
    );

  // s3rver keeps no initiation time: record it next to the upload's key and metadata
  const initiateUpload = FilesystemStore.prototype.initiateUpload;
  FilesystemStore.prototype.initiateUpload = async function recordInitiated(
    bucket,
    key,
    uploadId,
    metadata,
  ) {
    const initiated = new Date().toISOString();
    await initiateUpload.call(this, bucket, key, uploadId, metadata);
    const file = path.join(uploadsDir(this, bucket), uploadId, INITIATED_FILE);
    const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
    await fs.promises.writeFile(tmp, JSON.stringify({ initiated }) + '\n');
    await fs.promises.rename(tmp, file);
  };

  // The upload uploadId of bucket, or null when there is none (never initiated, completed,
  // aborted, or still being initiated: its key file is written last by s3rver).
  async function readUpload(store, bucket, uploadId) {
    if (typeof uploadId !== 'string' || !UPLOAD_ID.test(uploadId)) return null;
    const dir = path.join(uploadsDir(store, bucket), uploadId);
    const readOptional = async (name) => {
      try {
        return await fs.promises.readFile(path.join(dir, name), 'utf8');
      } catch (err) {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
        throw err;
      }
    };
    const key = await readOptional('key');
    if (!key) return null;
    let initiated;
    try {
      initiated = Date.parse(JSON.parse((await readOptional(INITIATED_FILE)) || '{}').initiated);
    } catch (err) {
      initiated = NaN;
    }
    if (Number.isNaN(initiated)) {
      // an upload of a data directory from before this launcher: its key file's time is close
      try {
        initiated = (await fs.promises.stat(path.join(dir, 'key'))).mtimeMs;
      } catch (err) {
        return null;
      }
    }
    let storageClass = 'STANDARD';
    try {
      const metadata = JSON.parse((await readOptional('metadata')) || '{}');
      if (typeof metadata['x-amz-storage-class'] === 'string') {
        storageClass = metadata['x-amz-storage-class'];
      }
    } catch (err) {
      // unreadable metadata only loses the storage class
    }
    return { key, uploadId, initiated, storageClass };
  }

  // The upload uploadId of key in bucket, or 404 NoSuchUpload (or NoSuchBucket).
  async function requireUpload(ctx, bucket, key, uploadId) {
    await bucketCtrl.bucketExists(ctx);
    const upload = await readUpload(ctx.store, bucket, uploadId);
    if (!upload || upload.key !== key) throw noSuchUpload(uploadId);
    return upload;
  }

  function requireAccount(ctx) {
    if (!ctx.state.account) {
      throw new S3Error('AccessDenied', 'Access Denied');
    }
    return ctx.state.account;
  }

  function queryString(ctx, name) {
    const value = ctx.query[name];
    if (value === undefined) return '';
    if (typeof value !== 'string') {
      throw new S3Error('InvalidArgument', `${name} is given more than once`, {
        ArgumentName: name,
      });
    }
    return value;
  }

  async function listMultipartUploads(ctx, bucket) {
    const account = requireAccount(ctx);
    await bucketCtrl.bucketExists(ctx);
    for (const name of ['delimiter', 'encoding-type']) {
      if (name in ctx.query) {
        throw new S3Error(
          'NotImplemented',
          `ListMultipartUploads with ${name} is not implemented by this test server`,
        );
      }
    }
    const prefix = queryString(ctx, 'prefix');
    const keyMarker = queryString(ctx, 'key-marker');
    const uploadIdMarker = queryString(ctx, 'upload-id-marker');
    let maxUploads = MAX_UPLOADS;
    if ('max-uploads' in ctx.query) {
      const v = queryString(ctx, 'max-uploads');
      if (!/^\d{1,10}$/.test(v) || Number(v) < 1 || Number(v) > 2147483647) {
        throw new S3Error(
          'InvalidArgument',
          'Argument max-uploads must be an integer between 1 and 2147483647',
          { ArgumentName: 'max-uploads', ArgumentValue: v },
        );
      }
      maxUploads = Math.min(MAX_UPLOADS, Number(v));
    }

    let ids = [];
    try {
      ids = await fs.promises.readdir(uploadsDir(ctx.store, bucket));
    } catch (err) {
      if (err.code !== 'ENOENT') throw err;
    }
    const uploads = (
      await Promise.all(ids.map((id) => readUpload(ctx.store, bucket, id)))
    ).filter(Boolean);
    // key-marker alone starts after every upload of that key; with upload-id-marker, after
    // that one upload (AWS ignores upload-id-marker without key-marker)
    const afterMarkers = (u) => {
      if (keyMarker === '') return true;
      const c = compareBytes(u.key, keyMarker);
      if (c !== 0) return c > 0;
      return uploadIdMarker !== '' && compareBytes(u.uploadId, uploadIdMarker) > 0;
    };
    const matching = uploads
      .filter((u) => u.key.startsWith(prefix) && afterMarkers(u))
      .sort((a, b) => compareBytes(a.key, b.key) || compareBytes(a.uploadId, b.uploadId));
    const page = matching.slice(0, maxUploads);
    const last = page.length > 0 ? page[page.length - 1] : undefined;
    const who = { ID: account.id, DisplayName: account.displayName || DUMMY_ACCOUNT.displayName };
    ctx.body = {
      ListMultipartUploadsResult: {
        '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
        Bucket: bucket,
        KeyMarker: keyMarker,
        UploadIdMarker: uploadIdMarker,
        NextKeyMarker: last ? last.key : '',
        Prefix: prefix,
        NextUploadIdMarker: last ? last.uploadId : '',
        MaxUploads: maxUploads,
        IsTruncated: matching.length > page.length,
        Upload: page.map((u) => ({
          Key: u.key,
          UploadId: u.uploadId,
          Initiator: who,
          Owner: who,
          StorageClass: u.storageClass,
          Initiated: new Date(u.initiated).toISOString(),
        })),
      },
    };
  }

  async function abortMultipartUpload(ctx, bucket, key, uploadId) {
    requireAccount(ctx);
    await requireUpload(ctx, bucket, key, uploadId);
    // out of sight at once (a rename), then removed: a listing never sees half an upload
    const dir = path.join(uploadsDir(ctx.store, bucket), uploadId);
    const trash = path.join(
      uploadsDir(ctx.store, bucket),
      `.aborted-${uploadId}-${process.pid}-${crypto.randomBytes(6).toString('hex')}`,
    );
    try {
      await fs.promises.rename(dir, trash);
    } catch (err) {
      if (err.code === 'ENOENT') throw noSuchUpload(uploadId); // aborted concurrently
      throw err;
    }
    await fs.promises.rm(trash, { recursive: true, force: true });
    ctx.logger.info('Aborted multipart upload %s of "%s" in bucket "%s"', uploadId, key, bucket);
    ctx.status = 204;
  }

  // Runs after a request passed the signature check, before s3rver's routes.
  async function multipartApi(ctx, next) {
    const bucket = ctx.params.bucket;
    if (ctx.state.website || !bucket) return next();
    let key = ctx.params.key;
    // as s3rver's router.param('key'): a key's trailing slash is part of it
    if (key && ctx.path.endsWith('/') && !key.endsWith('/')) key += '/';
    if (!key) {
      if (ctx.method === 'GET' && 'uploads' in ctx.query) {
        return listMultipartUploads(ctx, bucket);
      }
      return next();
    }
    if ('uploadId' in ctx.query && !('uploads' in ctx.query)) {
      const uploadId = ctx.query.uploadId;
      if (ctx.method === 'DELETE') return abortMultipartUpload(ctx, bucket, key, uploadId);
      if (ctx.method === 'PUT' || ctx.method === 'POST') {
        // UploadPart would otherwise recreate an aborted upload's directory, and
        // CompleteMultipartUpload fail with a 500
        await requireUpload(ctx, bucket, key, uploadId);
      }
    }
    return next();
  }

  // routes.js makes its authentication middleware when it is loaded: hand it one that goes on
  // to multipartApi once the signature is verified (and that first applies revocations)
  let hooked = false;
  require.cache[authPath].exports = function authenticationThenMultipart(...args) {
    hooked = true;
    const authenticate = authentication(...args);
    return function authenticationAndMultipart(ctx, next) {
      applyRevocations();
      return authenticate(ctx, () => multipartApi(ctx, next));
    };
  };
  return () => hooked;
}

// Key pairs for credential rotation tests (--key, --revoked-keys-file).
let revokedKeysFile;
function addKeys(keys, file) {
  const AWSAccount = requireS3rver('@20minutes/s3rver/lib/models/account');
  for (const [id, secret] of keys) AWSAccount.DUMMY_ACCOUNT.createKeyPair(id, secret);
  revokedKeysFile = file;
}
function applyRevocations() {
  if (!revokedKeysFile) return;
  let text;
  try {
    text = fs.readFileSync(revokedKeysFile, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') return;
    throw err;
  }
  const AWSAccount = requireS3rver('@20minutes/s3rver/lib/models/account');
  for (const id of text.split('\n').map((l) => l.trim())) {
    if (id && AWSAccount.registry.has(id)) AWSAccount.DUMMY_ACCOUNT.revokeAccessKey(id);
  }
}

function writeFileAtomic(file, text) {
  const tmp = `${file}.tmp.${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  checkLegacyProvider();
  const multipartHooked = addMultipartUploads();
  const S3rver = loadS3rver();
  if (!multipartHooked()) die("the multipart additions did not hook in: s3rver's routes changed?");
  makePutsAtomic();
  addKeys(opts.keys, opts.revokedKeysFile);
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
