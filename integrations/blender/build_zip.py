"""Build the installable Blender add-on: kq_blender/ plus the shared kq_client.py, as one zip.

Usage: python3 integrations/blender/build_zip.py [OUT.zip]   (npm run blender-addon: dist/kq_blender.zip)
Install in Blender: Edit > Preferences > Add-ons > Install..., pick the zip, tick "kq render queue".
"""
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "..", "python", "kq_client.py")


def build(out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        package = os.path.join(HERE, "kq_blender")
        for name in sorted(os.listdir(package)):
            if name.endswith(".py"):
                z.write(os.path.join(package, name), "kq_blender/" + name)
        z.write(CLIENT, "kq_blender/kq_client.py")
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "dist", "kq_blender.zip")))
