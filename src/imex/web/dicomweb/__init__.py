"""DICOMweb on the hub's HTTP port under /dicomweb: QIDO-RS, WADO-RS and STOW-RS over the same index and
blob store as the portal, scoped by the caller's permissions exactly like the portal."""

from fastapi import APIRouter

from imex.web.dicomweb import qido, stow, wado

router = APIRouter()
for _module in (qido, wado, stow):
    router.include_router(_module.router)
