"""kq for Katana, the parts that need no Katana: frame ranges, renderboot and batch command lines, job names,
and KqFarm, which turns a render of a 3D node into a kq job and reports kq's jobs the way the farm tab shows them.
The Katana layer (Plugins/kq_farm_plugin.py, Tabs/kq_tab.py) only translates Katana's objects into these calls."""
