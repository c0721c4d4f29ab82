// The npm e2b SDK's volumes: create one, write it through the content API, mount it into a
// sandbox that reads it and writes back, read that back without a sandbox. One JSON line out.
import { Sandbox, Volume } from 'e2b'

const vol = await Volume.create(`node-${Date.now()}`)
let destroyed = false
try {
  await vol.writeFile('/seed.txt', 'from node')
  const sbx = await Sandbox.create({ volumeMounts: { '/mnt/shared': vol } })
  let readInSandbox
  try {
    readInSandbox = await sbx.files.read('/mnt/shared/seed.txt')
    await sbx.commands.run('echo "written inside" > /mnt/shared/inside.txt')
  } finally {
    await sbx.kill()
  }
  const readBack = await vol.readFile('/inside.txt')
  const listed = (await vol.list('/')).map((e) => e.path).sort()
  destroyed = await Volume.destroy(vol.volumeId)
  console.log(JSON.stringify({ readInSandbox, readBack, listed, destroyed }))
} finally {
  if (!destroyed) await Volume.destroy(vol.volumeId)
}
