"""Writes an LSP input stream for lsp-hostile.test to stdout: argv[1] names
the case. Frames are standard (Content-Length) unless the case says
delimited."""
import sys

INIT = ('{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"processId":'
        '123,"rootUri":"test!","capabilities":{},"trace":"off"}}')
DEEP = ('{"jsonrpc":"2.0","id":1,"method":"textDocument/hover","params":'
        + '[' * 100000 + ']' * 100000 + '}')
SHUTDOWN = '{"jsonrpc":"2.0","id":2,"method":"shutdown"}'
EXIT = '{"jsonrpc":"2.0","method":"exit"}'


def frame(body, length=None):
    n = len(body) if length is None else length
    return 'Content-Length: %s\r\n\r\n%s' % (n, body)


case = sys.argv[1]
out = {
    # A deep message between good ones: dropped, the session goes on.
    'deep': frame(INIT) + frame(DEEP) + frame(SHUTDOWN) + frame(EXIT),
    'deep-delimited': '\n// -----\n'.join([INIT, DEEP, SHUTDOWN, EXIT]),
    # Malformed frames after a good one.
    'bad-length': frame(INIT) + frame(SHUTDOWN, 'abc'),
    'zero-length': frame(INIT) + frame(SHUTDOWN, 0),
    'huge-length': frame(INIT) + frame(SHUTDOWN, 99999999999),
    'no-header': frame(INIT) + SHUTDOWN,
    'no-length': frame(INIT) + 'Content-Type: x\r\n\r\n' + SHUTDOWN,
    'truncated': frame(INIT) + frame(SHUTDOWN, 500),
    'cut-headers': frame(INIT) + 'Content-Length: 10\r\n',
    'long-header': frame(INIT) + 'X-' + 'a' * 5000 + ': 1\r\n',
}[case]
sys.stdout.write(out)
