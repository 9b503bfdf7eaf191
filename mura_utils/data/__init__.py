"""Data: each dataset layout read into one index table (``registry``), splits and the Dataset
(``dataset``), the decode-once cache, image reading and batch augmentation."""
