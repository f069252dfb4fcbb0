// The entry point bundled into dist/poprelay-login.cjs, which the front
// (bin/poprelay-login) runs.

import { main } from './hook/recorder.js';

void main(process.argv.slice(2), process.env).then((status) => process.exit(status));
