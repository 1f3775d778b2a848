// A real SMTP server nobody here wrote: Nodemailer's smtp-server, configured from JSON.
//
//   node smtp_server.js CONFIG.json     (smtp-server found through NODE_PATH)
//
// Prints {"port": N} on stdout once it listens on 127.0.0.1, then appends one JSON object
// per line to config.ledger, synchronously, before the reply that the event causes:
//   connect  {cid, port}                     a client connected (port: its source port)
//   secure   {cid, servername}               TLS is up (implicit or STARTTLS), SNI name
//   C / S    {cid, line}                     each command (credentials redacted by
//                                            smtp-server itself) and each reply
//   auth     {cid, method, user, token, ok}  each onAuth call (token for XOAUTH2)
//   mail     {cid, from, args}               MAIL FROM accepted by smtp-server's checks
//   rcpt     {cid, to, code}                 each RCPT TO and our answer to it
//   message  {cid, transaction, from, to, utf8, body_type, servername, secure, user,
//             method, size, raw (base64), dropped}
//   chunk    {port, head}                    (config.chunks) each raw TCP read that
//                                            begins with a command, first 300 bytes
//   close    {cid}
//
// Config: port (0: any), ledger, secure (implicit TLS), key + cert (PEM text; STARTTLS
// and implicit TLS), starttls (false: hideSTARTTLS), auth (mechanisms; [] disables
// AUTH), users {name: password}, tokens [valid XOAUTH2 tokens], size (SIZE limit, 0:
// none), hide (["SMTPUTF8", "8BITMIME", "PIPELINING"]: not advertised), reject
// (recipient local-part prefix answered 550), max_rcpt (452 after N recipients in one
// transaction, 0: no limit), drop (recipient local-part prefix: the socket is destroyed
// once the message data has arrived, before any reply), chunks (record raw reads),
// oauth_535 (a refused XOAUTH2 token gets a plain 535, not the 334 error challenge).
'use strict';

const fs = require('fs');
const { SMTPServer } = require('smtp-server');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const ledger = fs.openSync(config.ledger, 'a');

function record(ev, fields) {
    fs.writeSync(ledger, JSON.stringify(Object.assign({ ev }, fields)) + '\n');
}

function localPart(address) {
    return String(address).split('@')[0];
}

function startsWith(address, prefix) {
    return Boolean(prefix) && localPart(address).startsWith(prefix);
}

// a bunyan-shaped logger: smtp-server logs each command as debug(entry, 'C:', line)
// and each reply as debug(entry, 'S:', line)
const logger = {
    debug(entry, kind, line) {
        if ((kind === 'C:' || kind === 'S:') && entry && entry.cid) {
            record(kind[0], { cid: entry.cid, line: String(line) });
        }
    },
    info() {},
    trace() {},
    warn() {},
    error() {},
    fatal() {}
};

const sockets = new Map(); // client source port -> raw TCP socket (to drop it)
const hide = new Set(config.hide || []);
const auth = config.auth || [];
const disabled = [];
if (!auth.length) {
    disabled.push('AUTH');
}

const options = {
    logger,
    secure: Boolean(config.secure),
    name: 'peer.test.example',
    banner: 'smtp-server peer',
    authMethods: auth.length ? auth : ['PLAIN'],
    authOptional: true,
    // the client must not send AUTH in clear anyway; this keeps the server's own
    // "STARTTLS first" refusal out of the way of what the tests check
    allowInsecureAuth: true,
    hideSTARTTLS: config.starttls === false,
    hideSMTPUTF8: hide.has('SMTPUTF8'),
    hide8BITMIME: hide.has('8BITMIME'),
    hidePIPELINING: hide.has('PIPELINING'),
    disabledCommands: disabled,
    size: config.size || 0,
    hideSize: !config.size,
    closeTimeout: 1000,
    socketTimeout: 30 * 1000,

    onConnect(session, callback) {
        record('connect', { cid: session.id, port: session.remotePort });
        callback();
    },

    onSecure(socket, session, callback) {
        record('secure', { cid: session.id, servername: session.servername || null });
        callback();
    },

    onAuth(a, session, callback) {
        const users = config.users || {};
        let ok;
        if (a.method === 'XOAUTH2') {
            ok = (config.tokens || []).includes(a.accessToken);
        } else {
            ok = Object.prototype.hasOwnProperty.call(users, a.username) && users[a.username] === a.password;
        }
        record('auth', { cid: session.id, method: a.method, user: a.username, token: a.accessToken || null, ok });
        if (ok) {
            return callback(null, { user: a.username });
        }
        if (a.method === 'XOAUTH2' && !config.oauth_535) {
            // the 334 error challenge Gmail sends for a stale token
            return callback(null, { data: { status: '401', schemes: 'bearer', scope: 'https://mail.google.com/' } });
        }
        const err = new Error('5.7.8 Authentication credentials invalid');
        err.responseCode = 535;
        return callback(err);
    },

    onMailFrom(address, session, callback) {
        record('mail', { cid: session.id, from: address.address, args: address.args || {} });
        callback();
    },

    onRcptTo(address, session, callback) {
        let err = null;
        const accepted = session.envelope.rcptTo.length;
        if (startsWith(address.address, config.reject)) {
            err = new Error('5.1.1 <' + address.address + '>: Recipient address rejected: no such user');
            err.responseCode = 550;
        } else if (config.max_rcpt && accepted >= config.max_rcpt) {
            err = new Error('4.5.3 Too many recipients');
            err.responseCode = 452;
        }
        record('rcpt', { cid: session.id, to: address.address, code: err ? err.responseCode : 250 });
        callback(err);
    },

    onData(stream, session, callback) {
        const parts = [];
        stream.on('data', chunk => parts.push(chunk));
        stream.on('end', () => {
            const raw = Buffer.concat(parts);
            const to = session.envelope.rcptTo.map(r => r.address);
            const dropped = to.some(r => startsWith(r, config.drop));
            record('message', {
                cid: session.id,
                transaction: session.transaction,
                from: session.envelope.mailFrom && session.envelope.mailFrom.address,
                to,
                utf8: Boolean(session.envelope.smtpUtf8),
                body_type: session.envelope.bodyType || null,
                servername: session.servername || null,
                secure: Boolean(session.secure),
                user: session.user || null,
                method: session.user ? session.transmissionType : null,
                size: raw.length,
                size_exceeded: Boolean(stream.sizeExceeded),
                raw: raw.toString('base64'),
                dropped
            });
            if (dropped) {
                // the data is in, the final "." with it: the connection goes away before
                // any reply, so the client cannot know whether the message was taken
                const socket = sockets.get(session.remotePort);
                if (socket) {
                    socket.destroy();
                    return;
                }
            }
            if (stream.sizeExceeded) {
                const err = new Error('5.3.4 Message exceeds fixed maximum message size');
                err.responseCode = 552;
                return callback(err);
            }
            callback(null, 'Message queued as ' + session.id + '.' + session.transaction);
        });
    },

    onClose(session) {
        record('close', { cid: session.id });
    }
};

if (config.key && config.cert) {
    options.key = config.key;
    options.cert = config.cert;
}

const server = new SMTPServer(options);

server.server.on('connection', socket => {
    const port = socket.remotePort;
    sockets.set(port, socket);
    socket.on('close', () => sockets.delete(port));
    if (config.chunks) {
        socket.on('data', chunk => {
            const head = chunk.subarray(0, 300).toString('latin1');
            if (/^(EHLO|HELO|MAIL|RCPT|DATA|RSET|NOOP|QUIT|AUTH|STARTTLS)\b/i.test(head)) {
                record('chunk', { port, head });
            }
        });
    }
});

server.on('error', err => {
    process.stderr.write('smtp-server error: ' + (err && err.stack ? err.stack : err) + '\n');
});

server.listen(config.port || 0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: server.server.address().port }) + '\n');
});

function shutdown() {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1500).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
