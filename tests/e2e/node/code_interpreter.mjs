// Drives the npm @e2b/code-interpreter SDK against Corral; E2B_* variables point it at the
// stack. Prints one JSON line with what it saw; the pytest side asserts on it.
import { Sandbox } from '@e2b/code-interpreter'

const sbx = await Sandbox.create()
const first = await sbx.runCode('x = 20\nprint("from node")')
const second = await sbx.runCode('x * 2 + 2')
const error = await sbx.runCode('1 / 0')
const context = await sbx.createCodeContext({ cwd: '/tmp' })
const cwd = await sbx.runCode('import os; os.getcwd()', { context })
const streamed = []
await sbx.runCode('print("streamed")', { onStdout: (m) => streamed.push(m.line) })
const contexts = (await sbx.listCodeContexts()).map((c) => c.language)
const languages = {}
for (const [language, code] of [['js', '6 * 7'], ['ts', 'const n: number = 6; n * 7'], ['r', '6 * 7'], ['java', '6 * 7']]) {
  const execution = await sbx.runCode(code, { language })
  languages[language] = execution.error ? execution.error.name : execution.results.map((r) => r.text).join()
}
await sbx.kill()
console.log(JSON.stringify({
  stdout: first.logs.stdout, text: second.text, error: error.error?.name, cwd: cwd.text, streamed, contexts, languages,
}))
