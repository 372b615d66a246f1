"""s3rec: S3Rec (Zhou et al., CIKM 2020) with optionally low-rank attribute heads."""
