"""What people look at: pictures without pyplot (``pictures``), matplotlib figures for papers
(``figures``), the offline viewer of one explanation (``viewer``) and dataset reports
(``datasets``). Depends on results and explanations, never the reverse at import time."""
