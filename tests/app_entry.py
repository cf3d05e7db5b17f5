"""Entry script for AppTest: runs app.py from a folder that has no `pages/` next to it.

NOTE: AppTest in Streamlit 1.67 resets its pages-directory flag before every run, so when a
`pages/` folder sits beside the main script, each rerun after the first executes only the page
(Streamlit's older multipage mode) and skips app.py's sidebar. Running app.py through this file
avoids that; the real server sets the flag once and is not affected.
"""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
