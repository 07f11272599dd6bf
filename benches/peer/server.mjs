// The peer of ferry-bench (issue 15): the official tus server for Node.js with its file store,
// as its README sets it up, on loopback. ferry-bench starts it as
// `node server.mjs PORT DIRECTORY`, waits for the line `ready` on stdout, and kills it at the
// end. Nothing is tuned: the comparison is with the server as a user would run it.
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
if (!port || !directory) {
  console.error('usage: node server.mjs PORT DIRECTORY');
  process.exit(2);
}
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
server.listen({ host: '127.0.0.1', port: Number(port) }, () => console.log('ready'));
