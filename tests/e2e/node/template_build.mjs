// The npm e2b SDK's template builder: a template from Corral's base with a RUN step and a
// copied file, then a sandbox of it. One JSON line out.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox, Template } from 'e2b'

const name = process.argv[2]
const context = mkdtempSync(join(tmpdir(), 'corral-js-'))
writeFileSync(join(context, 'note.txt'), 'from node\n')
const template = Template({ fileContextPath: context })
  .fromTemplate('base')
  .copy('note.txt', '/home/user/note.txt')
  .runCmd('whoami > /home/user/who.txt')
const info = await Template.build(template, name)
const sbx = await Sandbox.create(name)
try {
  const content = await sbx.files.read('/home/user/note.txt')
  const user = await sbx.files.read('/home/user/who.txt')
  console.log(JSON.stringify({ built: Boolean(info.templateId), content, user }))
} finally {
  await sbx.kill()
}
