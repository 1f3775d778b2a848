from django.urls import include, path

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("mail/events/", include("mailer.django.urls")),
]
