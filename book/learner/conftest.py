"""The notebooks here are the workshop's learner copies (python -m icl_meta.book.exercises --learner-copies),
offered for download on book/workshop.md. They are not tests: each raises NotImplementedError where the learner
writes code, so pytest, which runs every notebook under book/ (nbmake, testpaths in pyproject.toml), leaves them
out. tests/test_exercises.py checks instead that each equals what the generator makes of its exercise now."""

collect_ignore_glob = ["*.ipynb"]
