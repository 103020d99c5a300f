# Sourced by the GPU scripts: sets $folder to an unpacked CIFAR-10 JPEG folder, given the archive or the folder.
given=${1:-../shared/data/cifar10-jpeg.tar.xz}
if [ -f "$given" ]; then
  folder=${TMPDIR:-/tmp}/cifar10-jpeg
  [ -d "$folder/test" ] || { mkdir -p "$folder" && tar xJf "$given" -C "$folder"; }
else
  folder=$given
fi
