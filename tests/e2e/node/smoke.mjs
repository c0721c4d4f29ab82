// Drives the npm e2b SDK against Corral; E2B_* variables point it at the stack.
// Prints one JSON line with what it saw; the pytest side asserts on it.
import { Sandbox } from 'e2b'

const sbx = await Sandbox.create({ metadata: { client: 'node' }, envs: { FROM: 'node' } })
const run = await sbx.commands.run('echo $FROM; whoami')
await sbx.files.write('/home/user/node.txt', 'written by node')
const read = await sbx.files.read('/home/user/node.txt')
const entries = (await sbx.files.list('/home/user')).map((e) => e.name)
const listed = (await Sandbox.list({ query: { metadata: { client: 'node' } } }).nextItems()).map((s) => s.sandboxId)
const info = await sbx.getInfo()
const host = sbx.getHost(8000)
await sbx.kill()
const running = await sbx.isRunning()
console.log(JSON.stringify({
  sandboxId: sbx.sandboxId, stdout: run.stdout, read, entries, listed, metadata: info.metadata, host, running,
}))
