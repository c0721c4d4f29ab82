// The npm e2b SDK writing files where E2B's envd lets it: a multi-file write into a new
// top-level directory and the home directory, as the default user. One JSON line out.
import { Sandbox } from 'e2b'

const sbx = await Sandbox.create()
try {
  const written = await sbx.files.write([
    { path: '/0/multi_test_file0.txt', data: 'zero' },
    { path: '/home/user/multi_test_file1.txt', data: 'one' },
  ])
  const owners = await sbx.commands.run(
    "stat -c '%U' /0 /0/multi_test_file0.txt /home/user/multi_test_file1.txt",
  )
  let throughFile = ''
  try {
    await sbx.files.write('/0/multi_test_file0.txt/below.txt', 'no')
  } catch (err) {
    throughFile = err.name
  }
  console.log(JSON.stringify({
    paths: written.map((w) => w.path),
    owners: owners.stdout.trim().split('\n'),
    read: await sbx.files.read('/0/multi_test_file0.txt'),
    throughFile,
  }))
} finally {
  await sbx.kill()
}
