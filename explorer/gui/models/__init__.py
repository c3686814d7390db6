"""Item models and the Qt-free records they adapt: the module tree, the tensor table, their filters."""
